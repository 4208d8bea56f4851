// SPDX-License-Identifier: MIT
// What a store holds: listing its snapshots, and collecting the chunk objects
// no snapshot references (safe against a push running meanwhile: see
// docs/store.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "store/object_store.h"

namespace vmsnap::store {

struct ListedSnapshot {
  std::string name;
  uint64_t file_bytes = 0;
  uint64_t chunks = 0;
  std::string parent;  // an incremental snapshot's parent, by name
};
Result<std::vector<ListedSnapshot>> ListSnapshots(ObjectStore& store, const std::string& prefix);

struct GcStats {
  uint64_t snapshots = 0;
  uint64_t chunks = 0;               // chunk objects found
  uint64_t removed_chunks = 0;
  uint64_t removed_bytes = 0;
  uint64_t young_chunks = 0;         // unreferenced but marked within the grace period: kept
  uint64_t raced_chunks = 0;         // marked again while gc ran (on S3: or modified within the last second): kept
};
// Removes chunk objects that no layout references and that nobody marked
// within `grace_s` seconds (a push marks every chunk it relies on before it
// writes its layout). With `dry_run`, only counts.
Result<GcStats> CollectGarbage(ObjectStore& store, uint64_t grace_s, bool dry_run);

}  // namespace vmsnap::store
