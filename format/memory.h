// SPDX-License-Identifier: MIT
// Helpers over a snapshot's memory for capture, restore and the tools: page
// iteration over a chain, and the memory statistics `inspect` reports.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "format/chain.h"
#include "format/reader.h"
#include "base/status.h"

namespace vmsnap {

// Memory statistics of one snapshot file (not of its chain).
struct ManifestStats {
  uint64_t memory_bytes = 0;     // sum of the memory regions' sizes
  uint64_t region_pages = 0;     // memory_bytes / page size
  uint64_t chunks = 0;
  uint64_t defined_pages = 0;    // pages this file defines (all region pages for a full snapshot)
  uint64_t present_pages = 0;    // pages stored in the file
  // Pages this file says are zero: for a full snapshot every region page not
  // stored; for an incremental one the defined pages that are not stored.
  uint64_t zero_pages = 0;
  uint64_t inherited_pages = 0;  // incremental only: region pages left to the parent
  uint64_t stored_bytes = 0;     // sum of the chunks' stored lengths (bytes in the file)
  uint64_t raw_bytes = 0;        // present_pages * page size
};

// Computes the statistics from the validated chunk index (no chunk is read).
ManifestStats ComputeManifestStats(const SnapshotReader& reader);

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
