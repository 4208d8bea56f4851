// SPDX-License-Identifier: MIT
// Reading a snapshot from the store: its layout object, its parents', and
// its chunks, each checked as it arrives.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "store/layout_object.h"
#include "store/object_store.h"

namespace vmsnap::store {

// Snapshot `name`'s layout; NotFound, naming it, when the store has none.
Result<SnapshotLayout> FetchLayout(ObjectStore& store, const std::string& name);

// A snapshot and its parents, root first, each parent checked to have the
// snapshot id its child recorded: a parent pushed again with other content
// is refused, naming both.
struct StoredLayer {
  std::string name;
  SnapshotLayout layout;
  std::vector<uint8_t> raw;  // the layout object
};
Result<std::vector<StoredLayer>> FetchChain(ObjectStore& store, const std::string& name);

// One chunk of snapshot `name` into `out` (room for chunk.length + 1
// bytes: one more tells an object of the wrong size), checked against its
// SHA-256; a missing or altered object is named in the error as Pull names
// it. The caller reuses `out` from chunk to chunk.
Status FetchChunk(ObjectStore& store, const std::string& name, const LayoutChunk& chunk, uint8_t* out);

}  // namespace vmsnap::store
