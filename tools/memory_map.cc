// SPDX-License-Identifier: MIT
// The memory map of inspect --memory-map.
#include "tools/memory_map.h"

#include <algorithm>

#include "tools/state_json.h"

namespace vmsnap::tools {

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
