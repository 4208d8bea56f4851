// SPDX-License-Identifier: MIT
// Reading a snapshot's layouts and chunks from the store (see fetch.h).
#include "store/fetch.h"

#include <algorithm>

#include "store/sha256.h"

namespace vmsnap::store {
namespace {

Result<std::vector<uint8_t>> GetLayout(ObjectStore& store, const std::string& name) {
  auto raw = store.Get(LayoutObject(name));
  if (!raw.ok() && raw.status().code() == Code::kNotFound) {
    return Status::NotFound(store.where() + "/" + name + ": no such snapshot");
  }
  return raw;
}

}  // namespace

Status FetchChunk(ObjectStore& store, const std::string& name, const LayoutChunk& e, uint8_t* out) {
  const std::string obj = ChunkObject(e.sha.data());
  Result<uint64_t> r = store.ReadSized(obj, e.length, out);
  if (r.ok() && (r.value() != e.length || Sha256({out, e.length}) != e.sha)) {
    return Status::Corruption(store.where() + "/" + obj + ": its bytes do not match its name (SHA-256); "
                              "the object was altered");
  }
  if (!r.ok() && r.status().code() == Code::kNotFound) {
    return Status::NotFound(store.where() + "/" + obj + ": chunk of " + name + " is missing from the store");
  }
  return r.status();
}

Result<SnapshotLayout> FetchLayout(ObjectStore& store, const std::string& name) {
  VMSNAP_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, GetLayout(store, name));
  return DescribeLayout(raw, store.where() + "/" + name);
}

Result<std::vector<StoredLayer>> FetchChain(ObjectStore& store, const std::string& name) {
  std::vector<StoredLayer> chain;
  std::string at = name;
  for (;;) {
    if (chain.size() > layout::kMaxParentDepth) {
      return Status::Corruption(store.where() + "/" + name + " has more than " +
                                std::to_string(layout::kMaxParentDepth) + " parents");
    }
    StoredLayer layer;
    layer.name = at;
    auto raw = GetLayout(store, at);
    if (!raw.ok() && !chain.empty() && raw.status().code() == Code::kNotFound) {
      return Status::NotFound(store.where() + "/" + at + ": no such snapshot (the parent of " + store.where() + "/" +
                              chain.back().name + ")");
    }
    VMSNAP_ASSIGN_OR_RETURN(layer.raw, std::move(raw));
    VMSNAP_ASSIGN_OR_RETURN(layer.layout, DescribeLayout(layer.raw, store.where() + "/" + at));
    if (!chain.empty() && layer.layout.id != chain.back().layout.parent_id) {
      // Never used in its stead: the child's pages sit on top of the
      // parent it was made on, and no other.
      return Status::Corruption(store.where() + "/" + at + " is not the parent of " + store.where() + "/" +
                                chain.back().name + " (its snapshot id is " + layout::IdToHex(layer.layout.id) +
                                ", the child's parent has " + layout::IdToHex(chain.back().layout.parent_id) +
                                "): it was pushed again with other content");
    }
    at = layer.layout.parent;
    chain.push_back(std::move(layer));
    if (at.empty()) break;
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

}  // namespace vmsnap::store
