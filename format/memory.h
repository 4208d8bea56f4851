// SPDX-License-Identifier: MIT
// Helpers over a snapshot's memory for capture, restore and the tools: page
// iteration over a chain, and the memory statistics `inspect` reports.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "format/chain.h"
#include "format/reader.h"
#include "schemas/manifest.capnp.h"
#include "base/status.h"

namespace vmsnap {

// What one snapshot file says about a page of its memory regions.
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

// Memory statistics of one snapshot file (not of its chain).
struct MemoryStats {
  uint64_t page_size = 0;
  uint64_t size = 0;             // sum of the memory regions' sizes
  uint64_t regions = 0;
  uint64_t region_pages = 0;     // pages of all regions
  uint64_t chunks = 0;
  uint64_t defined_pages = 0;    // pages this file defines (all region pages for a full snapshot)
  uint64_t present_pages = 0;    // pages stored in the file
  // Pages this file says are zero: for a full snapshot every region page not
  // stored; for an incremental one the defined pages that are not stored.
  uint64_t zero_pages = 0;
  uint64_t absent_pages = 0;     // incremental only: region pages left to the parent
  uint64_t stored_bytes = 0;     // sum of the chunks' stored lengths (bytes in the file)
  uint64_t raw_bytes = 0;        // present_pages * page size
};

// Page size of the manifest, 4096 when it is missing or not a power of two
// (the reader rejects such files; this keeps the tools safe on any input).
uint64_t PageSizeOf(schema::Manifest::Reader m);

// Runs of pages the chunks define, ascending and merged; undefined pages
// inside a chunk's range are kAbsent runs, pages no chunk covers are not listed.
std::vector<PageRun> ChunkRuns(schema::Manifest::Reader m);

// From the manifest alone (no chunk is read); safe on any manifest.
MemoryStats ComputeMemoryStats(schema::Manifest::Reader m);

// One page of guest memory as of the chain's leaf.
struct PageView {
  uint64_t gpa = 0;
  std::span<const uint8_t> bytes;  // page_size bytes; valid only during the call
  bool stored = false;             // false: no layer stores it, it is zero
};

struct ForEachPageOptions {
  bool skip_zero = false;          // do not visit pages that no layer stores
  uint64_t window_bytes = 1 << 20; // how much memory is decoded at a time
};

// Visits every page of the leaf's memory regions in ascending guest-physical
// order, decoding a window at a time (bounded memory, each chunk checked as
// it is used). Stops at and returns the first error, the visitor's included.
Status ForEachPage(const SnapshotChain& chain, const std::function<Status(const PageView&)>& visit,
                   const ForEachPageOptions& options = {});

}  // namespace vmsnap
