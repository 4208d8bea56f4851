// SPDX-License-Identifier: MIT
// Page-level view of a snapshot's chunk index: which pages this file stores,
// records as zero, or leaves undefined. Used by inspect (--memory-map) and the
// JSON model's memory figures.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "schemas/manifest.capnp.h"

namespace vmsnap::tools {

enum class PageState : uint8_t {
  kPresent,  // stored in this file
  kZero,     // recorded as zero by this file
  kAbsent,   // not defined by this file: zero in a full snapshot, the parent's in an incremental one
};
const char* PageStateName(PageState s);

struct PageRun {
  uint64_t gpa = 0;
  uint64_t pages = 0;
  PageState state = PageState::kAbsent;
};

struct MemoryStats {
  uint64_t page_size = 0;
  uint64_t size = 0;            // sum of region sizes
  uint64_t regions = 0;
  uint64_t present_pages = 0;
  uint64_t zero_pages = 0;      // full snapshot: every region page that is not present
  uint64_t absent_pages = 0;    // incremental snapshot: region pages left to the parent
  uint64_t stored_bytes = 0;
  uint64_t raw_bytes = 0;
  uint64_t chunks = 0;
};

// Page size of the manifest, 4096 when it is missing or not a power of two
// (the reader rejects such files; this keeps the tools safe on any input).
uint64_t PageSizeOf(schema::Manifest::Reader m);

// Runs of pages the chunks define, ascending and merged; undefined pages
// inside a chunk's range are kAbsent runs, pages no chunk covers are not listed.
std::vector<PageRun> ChunkRuns(schema::Manifest::Reader m);

MemoryStats ComputeMemoryStats(schema::Manifest::Reader m);

// Per region: {slot, name, start, end, size, ranges: [{start, end, state,
// pages, bytes}]} with every page of the region in exactly one range (end
// exclusive). Pages no chunk covers are "absent".
nlohmann::ordered_json MemoryMapJson(schema::Manifest::Reader m);

}  // namespace vmsnap::tools
