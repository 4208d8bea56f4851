// SPDX-License-Identifier: MIT
// An incremental snapshot's layers, wherever they lie, laid out for the chain
// reader: a folder of links, each layer where its child's manifest looks for
// it. Used by the caches that hold a chain's layers as separate files.
#pragma once

#include <string>
#include <vector>

#include "base/fd.h"
#include "base/status.h"

namespace vmsnap {
class SnapshotReader;
}

namespace vmsnap::store {

// The layers of a chain (local files, open, root first) as the chain reader
// finds them: a folder `dir`/chains/HASH of links, each layer linked where
// its child's manifest looks for it (relative to the child's folder), the
// files themselves left where they are. Returns the leaf's link, and the
// folder held (a shared lock) until `hold` is closed: the caller keeps it
// until the chain is open. The folder is named by the layers' paths, so the
// same chain reuses it. A chain of one layer is its file, with no folder.
struct LinkedChain {
  std::string leaf;
  UniqueFd hold;
  std::string folder;  // empty for a chain of one layer
};
Result<LinkedChain> LinkChain(const std::string& dir, const std::vector<const SnapshotReader*>& layers);
// Removes the chain folders of `dir` with a link to a file that is gone
// (evicted from a cache, or made for one load), except those a LinkChain
// caller holds.
void RemoveDeadChains(const std::string& dir);
// Removes one chain folder (LinkChain's `folder`) unless a LinkChain
// caller holds it.
void RemoveChainFolder(const std::string& folder);

}  // namespace vmsnap::store
