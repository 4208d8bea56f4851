// SPDX-License-Identifier: MIT
// Page iteration over a snapshot chain; page runs and memory statistics of
// one snapshot, from its manifest.
#include "format/memory.h"

#include <algorithm>
#include <bit>
#include <vector>

namespace vmsnap {

const char* PageStateName(PageState s) {
  switch (s) {
    case PageState::kPresent: return "present";
    case PageState::kZero: return "zero";
    case PageState::kAbsent: return "absent";
  }
  return "?";
}

uint64_t PageSizeOf(schema::Manifest::Reader m) {
  uint64_t ps = m.getMemory().getPageSize();
  if (ps == 0 || (ps & (ps - 1)) != 0) return 4096;
  return ps;
}

namespace {

// Bit i of a bitmap; bits past its end read as `missing`.
bool Bit(capnp::Data::Reader bm, uint64_t i, bool missing) {
  if (i / 8 >= bm.size()) return missing;
  return (bm[i / 8] >> (i % 8)) & 1;
}

void Append(std::vector<PageRun>& runs, uint64_t gpa, uint64_t pages, PageState st, uint64_t ps) {
  if (!runs.empty() && runs.back().state == st && runs.back().gpa + runs.back().pages * ps == gpa) {
    runs.back().pages += pages;
    return;
  }
  runs.push_back({gpa, pages, st});
}

}  // namespace

std::vector<PageRun> ChunkRuns(schema::Manifest::Reader m) {
  uint64_t ps = PageSizeOf(m);
  std::vector<PageRun> runs;
  for (auto c : m.getChunks()) {
    auto present = c.getPresentBitmap();
    auto defined = c.getDefinedBitmap();
    bool all_defined = defined.size() == 0;
    uint64_t gpa = c.getGuestPhysAddr();
    for (uint64_t i = 0; i < c.getPageCount(); i++) {
      PageState st = PageState::kAbsent;
      if (all_defined || Bit(defined, i, false)) {
        st = Bit(present, i, false) ? PageState::kPresent : PageState::kZero;
      }
      Append(runs, gpa + i * ps, 1, st, ps);
    }
  }
  // The writer emits chunks sorted; a malformed file may not, and the views
  // built on these runs assume ascending order.
  std::stable_sort(runs.begin(), runs.end(), [](const PageRun& a, const PageRun& b) { return a.gpa < b.gpa; });
  return runs;
}

MemoryStats ComputeMemoryStats(schema::Manifest::Reader m) {
  MemoryStats s;
  s.page_size = PageSizeOf(m);
  for (auto r : m.getMemory().getRegions()) {
    s.size += r.getSize();
    s.region_pages += r.getSize() / s.page_size;
    s.regions++;
  }
  const uint64_t region_pages = s.region_pages;
  uint64_t defined_zero = 0;
  for (const PageRun& run : ChunkRuns(m)) {
    if (run.state == PageState::kPresent) s.present_pages += run.pages;
    if (run.state == PageState::kZero) defined_zero += run.pages;
  }
  for (auto c : m.getChunks()) {
    s.stored_bytes += c.getStoredLength();
    s.raw_bytes += c.getRawLength();
    s.chunks++;
  }
  uint64_t defined = s.present_pages + defined_zero;
  if (m.hasParent()) {
    s.defined_pages = defined;
    s.zero_pages = defined_zero;
    s.absent_pages = region_pages > defined ? region_pages - defined : 0;
  } else {
    s.defined_pages = region_pages;
    s.zero_pages = region_pages > s.present_pages ? region_pages - s.present_pages : 0;
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
