// SPDX-License-Identifier: MIT
// Pulling a snapshot out of the store into local files, byte for byte what
// was pushed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/progress.h"
#include "base/status.h"
#include "store/object_store.h"

namespace vmsnap::store {

// Writes the snapshot `name` to `out_path` (through OutputFile), every chunk
// checked against its SHA-256 on arrival.
// An incremental snapshot's parents are written where each layer's manifest
// looks for its parent (relative to the layer's directory); a file already
// there with the right snapshot id is kept, one with another is refused.
struct PullStats {
  uint64_t chunks = 0;
  uint64_t file_bytes = 0;
  std::vector<std::string> parents_written, parents_kept;  // local paths, leaf's parent first
};
Result<PullStats> Pull(ObjectStore& store, const std::string& name, const std::string& out_path,
                       unsigned parallel, const ProgressFn& progress);

// The snapshot as a local file in `cache_dir` (which must exist), pulled
// there unless an earlier call did: the file is named by the hash of the
// snapshot's layout object, so a cached file is always of this content. An
// incremental snapshot's layers are each cached so; the path returned is
// then the leaf's link in a chain folder (LinkChain).
Result<std::string> PullCached(ObjectStore& store, const std::string& name, const std::string& cache_dir,
                               const ProgressFn& progress);

}  // namespace vmsnap::store
