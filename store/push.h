// SPDX-License-Identifier: MIT
// Pushing a snapshot file into the store: only the chunks it lacks, many in
// flight, the layout object last (docs/store.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/progress.h"
#include "base/status.h"
#include "store/object_store.h"

namespace vmsnap::store {

struct PushStats {
  uint64_t chunks = 0;            // chunks in the file (each counted once per object)
  uint64_t uploaded_chunks = 0;
  uint64_t uploaded_bytes = 0;
  uint64_t present_chunks = 0;    // already in the store
  uint64_t present_bytes = 0;
  uint64_t layout_bytes = 0;      // the layout object
  uint64_t file_bytes = 0;
  // An incremental snapshot: the parent's name in the store, and the parents
  // this push pushed first (root first; their chunks are in the counts above).
  std::string parent;
  std::vector<std::string> pushed_parents;

  // Takes in what pushing this snapshot's parents first did: their chunk
  // counts join the totals and their names pushed_parents; file_bytes and
  // layout_bytes stay this snapshot's own.
  void AddParents(const PushStats& parents);
};

struct PushOptions {
  unsigned parallel = 16;         // objects in flight
  ProgressFn progress;
  // A push that took longer than this marks every chunk again before it
  // writes the layout, so gc's grace period always covers the gap.
  uint64_t remark_after_s = 600;
  // For an incremental snapshot: the name its parent has (or gets) in the
  // store. Empty: ParentName's default.
  std::string parent_name;
};

// The store name an incremental snapshot's parent gets by default: the
// folder of the child's name (up to its last '/'), then the parent's file
// name (as the child's manifest records it) without ".vmsnap". Empty when
// that file name gives none.
std::string DefaultParentName(const std::string& child_name, const std::string& recorded_parent_path);

// Uploads the chunks of the snapshot file at `path` that the store lacks,
// then its layout object. Running it again after a failure uploads only what
// is missing. An incremental snapshot's layout names its parent in the same
// store (by name, and by the parent's snapshot id the manifest records): a
// parent the store lacks is pushed first from the local file the manifest
// names; one that holds other content under that name is refused.
Result<PushStats> Push(const std::string& path, ObjectStore& store, const std::string& name,
                       const PushOptions& options);

}  // namespace vmsnap::store
