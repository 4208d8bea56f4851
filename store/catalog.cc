// SPDX-License-Identifier: MIT
// Listing a store's snapshots and collecting its unreferenced chunks (see
// catalog.h).
#include "store/catalog.h"

#include <algorithm>
#include <cstring>
#include <ctime>
#include <set>

#include "store/layout_object.h"

namespace vmsnap::store {

Result<std::vector<ListedSnapshot>> ListSnapshots(ObjectStore& store, const std::string& prefix) {
  VMSNAP_ASSIGN_OR_RETURN(std::vector<std::string> names, store.List(LayoutObject(prefix)));
  std::sort(names.begin(), names.end());
  std::vector<ListedSnapshot> out;
  for (const std::string& obj : names) {
    ListedSnapshot s;
    s.name = obj.substr(std::strlen(kLayoutPrefix));
    auto raw = store.Get(obj);
    if (!raw.ok() && raw.status().code() == Code::kNotFound) continue;  // removed meanwhile
    if (!raw.ok()) return raw.status();
    VMSNAP_ASSIGN_OR_RETURN(Layout l, DecodeLayout(raw.value(), store.where() + "/" + s.name));
    s.file_bytes = l.file_size;
    s.chunks = l.chunks.size();
    s.parent = l.parent;
    out.push_back(std::move(s));
  }
  return out;
}

Result<GcStats> CollectGarbage(ObjectStore& store, uint64_t grace_s, bool dry_run) {
  GcStats st;
  // Chunks are listed before the layouts are read: a chunk a push uploads
  // later is not a candidate, and one it relies on is marked by it (young).
  VMSNAP_ASSIGN_OR_RETURN(std::vector<std::string> chunks, store.List(kChunkPrefix));
  VMSNAP_ASSIGN_OR_RETURN(std::vector<std::string> layouts, store.List(kLayoutPrefix));
  st.chunks = chunks.size();
  std::set<std::string> referenced;
  for (const std::string& obj : layouts) {
    auto raw = store.Get(obj);
    if (!raw.ok() && raw.status().code() == Code::kNotFound) continue;
    if (!raw.ok()) return raw.status();
    // An unreadable layout stops gc: its chunks cannot be told apart.
    VMSNAP_ASSIGN_OR_RETURN(Layout l, DecodeLayout(raw.value(), store.where() + "/" + obj));
    for (const LayoutChunk& e : l.chunks) referenced.insert(ChunkObject(e.sha.data()));
    ++st.snapshots;
  }
  const int64_t now = std::time(nullptr);
  for (const std::string& obj : chunks) {
    if (referenced.count(obj)) continue;
    uint64_t size = 0;
    auto mark = store.Mark(obj, &size);
    if (!mark.ok() && mark.status().code() == Code::kNotFound) continue;
    if (!mark.ok()) return mark.status();
    if (now - MarkTime(mark.value()) < static_cast<int64_t>(grace_s)) {
      ++st.young_chunks;
      continue;
    }
    if (!dry_run) {
      auto removed = store.RemoveIfMark(obj, mark.value());
      if (!removed.ok() && removed.status().code() == Code::kNotFound) continue;
      if (!removed.ok()) return removed.status();
      if (!*removed) {
        ++st.raced_chunks;
        continue;
      }
    }
    ++st.removed_chunks;
    st.removed_bytes += size;
  }
  return st;
}

}  // namespace vmsnap::store
