// SPDX-License-Identifier: MIT
// The page cache used by read and translate (numbers: numbers.cc).
#include "tools/forensics/cli_util.h"

#include <cstring>

namespace vmsnap::forensics {

Status PageCache::Read(uint64_t gpa, uint64_t len, uint8_t* out) const {
  constexpr uint64_t kPage = 4096;
  if (len == 0 || gpa / kPage != (gpa + len - 1) / kPage) return below_.Read(gpa, len, out);
  const uint64_t page = gpa / kPage * kPage;
  auto it = index_.find(page);
  if (it == index_.end()) {
    // The page may run past the end of a region; read just what the caller asked then.
    Status inside = guest::CheckInside(below_.regions(), page, kPage);
    if (!inside.ok()) return below_.Read(gpa, len, out);
    std::vector<uint8_t> bytes(kPage);
    VMSNAP_RETURN_IF_ERROR(below_.Read(page, kPage, bytes.data()));
    lru_.emplace_front(page, std::move(bytes));
    it = index_.emplace(page, lru_.begin()).first;
    if (lru_.size() > max_pages_) {
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
  } else {
    lru_.splice(lru_.begin(), lru_, it->second);
  }
  std::memcpy(out, it->second->second.data() + (gpa - page), len);
  return Status::Ok();
}

}  // namespace vmsnap::forensics
