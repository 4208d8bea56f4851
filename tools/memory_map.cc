// SPDX-License-Identifier: MIT
// Page-level view of the chunk index.
#include "tools/memory_map.h"

#include <algorithm>

#include "tools/state_json.h"

namespace vmsnap::tools {

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
  uint64_t region_pages = 0;
  for (auto r : m.getMemory().getRegions()) {
    s.size += r.getSize();
    region_pages += r.getSize() / s.page_size;
    s.regions++;
  }
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
    s.zero_pages = defined_zero;
    s.absent_pages = region_pages > defined ? region_pages - defined : 0;
  } else {
    s.zero_pages = region_pages > s.present_pages ? region_pages - s.present_pages : 0;
  }
  return s;
}

nlohmann::ordered_json MemoryMapJson(schema::Manifest::Reader m) {
  using json = nlohmann::ordered_json;
  uint64_t ps = PageSizeOf(m);
  std::vector<PageRun> runs = ChunkRuns(m);
  json regions = json::array();
  for (auto r : m.getMemory().getRegions()) {
    uint64_t start = r.getGuestPhysAddr();
    uint64_t end = start + r.getSize();
    if (end < start) end = UINT64_MAX;  // malformed: clamp rather than wrap
    json ranges = json::array();
    auto add = [&](uint64_t a, uint64_t b, PageState st) {
      if (a >= b) return;
      if (!ranges.empty() && ranges.back()["state"] == PageStateName(st)) {
        // Merge with the previous range when contiguous.
        auto& last = ranges.back();
        if (last["end"] == Hex(a)) {
          uint64_t bytes = last["bytes"].get<uint64_t>() + (b - a);
          last["end"] = Hex(b);
          last["pages"] = bytes / ps;
          last["bytes"] = bytes;
          return;
        }
      }
      json j = json::object();
      j["start"] = Hex(a);
      j["end"] = Hex(b);
      j["state"] = PageStateName(st);
      j["pages"] = (b - a) / ps;
      j["bytes"] = b - a;
      ranges.push_back(std::move(j));
    };
    uint64_t cursor = start;
    auto it = std::lower_bound(runs.begin(), runs.end(), start, [&](const PageRun& run, uint64_t gpa) {
      return run.gpa + run.pages * ps <= gpa;
    });
    for (; it != runs.end() && it->gpa < end; ++it) {
      uint64_t a = std::max(it->gpa, start);
      uint64_t b = std::min(it->gpa + it->pages * ps, end);
      if (a < cursor) a = cursor;  // overlapping chunks in a malformed file
      if (a >= b) continue;
      add(cursor, a, PageState::kAbsent);
      add(a, b, it->state);
      cursor = b;
    }
    add(cursor, end, PageState::kAbsent);
    json reg = json::object();
    reg["slot"] = r.getSlot();
    reg["name"] = std::string(r.getName().cStr());
    reg["start"] = Hex(start);
    reg["end"] = Hex(end);
    reg["size"] = r.getSize();
    reg["ranges"] = std::move(ranges);
    regions.push_back(std::move(reg));
  }
  return regions;
}

}  // namespace vmsnap::tools
