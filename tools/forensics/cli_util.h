// SPDX-License-Identifier: MIT
// Small helpers the forensic subcommands share: number parsing and a cache of
// guest pages for page walks.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "guest/memory.h"

namespace vmsnap::forensics {

// "0x1f000", "126976", and with `allow_suffix` also "4K", "2M", "1G" (binary).
Result<uint64_t> ParseNumber(std::string_view text, std::string_view what, bool allow_suffix = false);

// A guest memory size (`--mem`): ParseNumber with suffixes, more than 0 and
// at most 1 TiB.
Result<uint64_t> ParseMemorySize(std::string_view text);

// Caches whole 4 KiB pages of the memory below it. A page walk reads 8-byte
// entries; without the cache each would decompress a whole chunk.
class PageCache final : public guest::PhysicalMemory {
 public:
  explicit PageCache(const guest::PhysicalMemory& below, size_t max_pages = 64)
      : below_(below), max_pages_(max_pages) {}
  const std::vector<guest::Region>& regions() const override { return below_.regions(); }
  Status Read(uint64_t gpa, uint64_t len, uint8_t* out) const override;

 private:
  const guest::PhysicalMemory& below_;
  size_t max_pages_;
  mutable std::list<std::pair<uint64_t, std::vector<uint8_t>>> lru_;  // front: newest
  mutable std::unordered_map<uint64_t, decltype(lru_)::iterator> index_;
};

}  // namespace vmsnap::forensics
