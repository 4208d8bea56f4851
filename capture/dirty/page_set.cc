// SPDX-License-Identifier: MIT
// PageLayout and PageSet: see page_set.h.
#include "capture/dirty/page_set.h"

#include <algorithm>

namespace vmsnap::capture::dirty {

PageLayout::PageLayout(std::span<const kvm::GuestRegion> regions, uint32_t page_size)
    : regions_(regions.begin(), regions.end()), page_size_(page_size) {
  std::sort(regions_.begin(), regions_.end(), [](const auto& a, const auto& b) { return a.gpa < b.gpa; });
  for (const auto& r : regions_) {
    first_.push_back(total_pages_);
    total_pages_ += r.size / page_size_;
  }
}

std::optional<uint64_t> PageLayout::IndexOfGpa(uint64_t gpa) const {
  for (size_t i = 0; i < regions_.size(); ++i) {
    const auto& r = regions_[i];
    if (gpa >= r.gpa && gpa - r.gpa < r.size) return first_[i] + (gpa - r.gpa) / page_size_;
  }
  return std::nullopt;
}

std::optional<uint64_t> PageLayout::IndexOfSlotPage(uint32_t slot, uint64_t offset) const {
  for (size_t i = 0; i < regions_.size(); ++i) {
    if (regions_[i].slot == slot) {
      if (offset >= regions_[i].size / page_size_) return std::nullopt;
      return first_[i] + offset;
    }
  }
  return std::nullopt;
}

size_t PageLayout::RegionOfIndex(uint64_t index) const {
  auto it = std::upper_bound(first_.begin(), first_.end(), index);
  return static_cast<size_t>(it - first_.begin()) - 1;
}

uint64_t PageLayout::GpaOfIndex(uint64_t index) const {
  size_t r = RegionOfIndex(index);
  return regions_[r].gpa + (index - first_[r]) * page_size_;
}

uint8_t* PageLayout::HostOfIndex(uint64_t index) const {
  size_t r = RegionOfIndex(index);
  return regions_[r].host + (index - first_[r]) * page_size_;
}

void PageSet::SetAll() {
  std::fill(words_.begin(), words_.end(), ~uint64_t{0});
  if (pages_ % 64 && !words_.empty()) words_.back() = (uint64_t{1} << (pages_ % 64)) - 1;
}

uint64_t PageSet::Count() const {
  uint64_t n = 0;
  for (uint64_t w : words_) n += static_cast<uint64_t>(std::popcount(w));
  return n;
}

bool PageSet::Empty() const {
  return std::all_of(words_.begin(), words_.end(), [](uint64_t w) { return w == 0; });
}

uint64_t PageSet::Merge(const PageSet& other) {
  uint64_t added = 0;
  size_t n = std::min(words_.size(), other.words_.size());
  for (size_t i = 0; i < n; ++i) {
    uint64_t nw = other.words_[i] & ~words_[i];
    added += static_cast<uint64_t>(std::popcount(nw));
    words_[i] |= nw;
  }
  return added;
}

void PageSet::Subtract(const PageSet& other) {
  size_t n = std::min(words_.size(), other.words_.size());
  for (size_t i = 0; i < n; ++i) words_[i] &= ~other.words_[i];
}

}  // namespace vmsnap::capture::dirty
