// SPDX-License-Identifier: MIT
// The guest pages a dirty tracker covers (PageLayout: regions in guest-physical
// order, each page given a dense index) and a set of those pages (PageSet).
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "kvm/kvm.h"

namespace vmsnap::capture::dirty {

class PageLayout {
 public:
  PageLayout() = default;
  // Regions are sorted by guest-physical address; sizes must be page multiples.
  PageLayout(std::span<const kvm::GuestRegion> regions, uint32_t page_size);

  uint32_t page_size() const { return page_size_; }
  uint64_t total_pages() const { return total_pages_; }
  const std::vector<kvm::GuestRegion>& regions() const { return regions_; }
  // Index of the region's first page in the dense numbering.
  uint64_t first_index(size_t region) const { return first_[region]; }
  uint64_t region_pages(size_t region) const { return regions_[region].size / page_size_; }

  // Dense index of the page holding `gpa`, if a region covers it.
  std::optional<uint64_t> IndexOfGpa(uint64_t gpa) const;
  // Dense index of page `offset` of KVM slot `slot`, if that slot is tracked.
  std::optional<uint64_t> IndexOfSlotPage(uint32_t slot, uint64_t offset) const;
  uint64_t GpaOfIndex(uint64_t index) const;
  // Host address of the page with dense index `index`.
  uint8_t* HostOfIndex(uint64_t index) const;
  // Region holding dense index `index`.
  size_t RegionOfIndex(uint64_t index) const;

 private:
  std::vector<kvm::GuestRegion> regions_;
  std::vector<uint64_t> first_;
  uint32_t page_size_ = 4096;
  uint64_t total_pages_ = 0;
};

// A set of pages by dense index: one bit per page.
class PageSet {
 public:
  PageSet() = default;
  explicit PageSet(uint64_t pages) : pages_(pages), words_((pages + 63) / 64, 0) {}

  uint64_t capacity() const { return pages_; }
  void Set(uint64_t i) { words_[i >> 6] |= uint64_t{1} << (i & 63); }
  void Clear(uint64_t i) { words_[i >> 6] &= ~(uint64_t{1} << (i & 63)); }
  bool Test(uint64_t i) const { return (words_[i >> 6] >> (i & 63)) & 1; }
  void Reset() { std::fill(words_.begin(), words_.end(), 0); }
  void SetAll();
  uint64_t Count() const;
  bool Empty() const;
  // this |= other; returns how many bits were newly set.
  uint64_t Merge(const PageSet& other);
  // this &= ~other.
  void Subtract(const PageSet& other);
  template <typename F>
  void ForEach(F&& f) const {
    for (size_t w = 0; w < words_.size(); ++w) {
      uint64_t bits = words_[w];
      while (bits) {
        int b = std::countr_zero(bits);
        f(uint64_t(w) * 64 + uint64_t(b));
        bits &= bits - 1;
      }
    }
  }
  std::vector<uint64_t>& words() { return words_; }
  const std::vector<uint64_t>& words() const { return words_; }

 private:
  uint64_t pages_ = 0;
  std::vector<uint64_t> words_;
};

}  // namespace vmsnap::capture::dirty
