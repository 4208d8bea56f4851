// SPDX-License-Identifier: MIT
// Page iteration over a snapshot chain and memory statistics of one snapshot.
#include "format/memory.h"

#include <algorithm>
#include <bit>
#include <vector>

namespace vmsnap {

ManifestStats ComputeManifestStats(const SnapshotReader& reader) {
  ManifestStats s;
  const uint32_t ps = reader.page_size();
  for (auto r : reader.manifest().getMemory().getRegions()) s.memory_bytes += r.getSize();
  s.region_pages = ps ? s.memory_bytes / ps : 0;
  const bool full = !reader.manifest().hasParent();
  for (const ChunkInfo& c : reader.chunk_index()) {
    ++s.chunks;
    const size_t bm = (c.page_count + 7) / 8;
    uint64_t present = 0, defined = 0;
    for (size_t b = 0; b < bm; ++b) {
      present += unsigned(std::popcount(unsigned(c.present[b])));
      if (c.defined) defined += unsigned(std::popcount(unsigned(c.defined[b])));
    }
    if (!c.defined) defined = c.page_count;
    s.present_pages += present;
    s.defined_pages += defined;
    s.stored_bytes += c.stored_length;
    s.raw_bytes += c.raw_length;
  }
  if (full) {
    s.defined_pages = s.region_pages;
    s.zero_pages = s.region_pages - std::min(s.region_pages, s.present_pages);
  } else {
    s.zero_pages = s.defined_pages - s.present_pages;
    s.inherited_pages = s.region_pages - std::min(s.region_pages, s.defined_pages);
  }
  return s;
}

Status ForEachPage(const SnapshotChain& chain, const std::function<Status(const PageView&)>& visit,
                   const ForEachPageOptions& options) {
  const uint32_t ps = chain.leaf().page_size();
  const uint64_t window = std::max<uint64_t>(ps, options.window_bytes / ps * ps);
  std::vector<uint8_t> buf(window);
  for (auto reg : chain.leaf().manifest().getMemory().getRegions()) {
    const uint64_t start = reg.getGuestPhysAddr(), end = start + reg.getSize();
    for (uint64_t w = start; w < end; w += window) {
      const uint64_t n = std::min(window, end - w);
      VMSNAP_RETURN_IF_ERROR(chain.ReadMemory(w, n, buf.data()));
      for (uint64_t off = 0; off < n; off += ps) {
        PageView v;
        v.gpa = w + off;
        v.stored = chain.Locate(v.gpa).stored;
        if (options.skip_zero && !v.stored) continue;
        v.bytes = std::span<const uint8_t>(buf.data() + off, ps);
        VMSNAP_RETURN_IF_ERROR(visit(v));
      }
    }
  }
  return Status::Ok();
}

}  // namespace vmsnap
