// SPDX-License-Identifier: MIT
// Snapshots in an object store, content-addressed (docs/store.md): each
// chunk's stored bytes are one immutable object named by their SHA-256, so a
// chunk that several snapshots (or the layers of a chain) share is stored once;
// a snapshot is one small "layout" object -- where each chunk sits in the file,
// and the file's other bytes (header, manifest, footer, padding), compressed --
// written last, so no reader ever sees a snapshot whose chunks are not all
// there. A pull rebuilds the file byte for byte.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/status.h"
#include "format/layout.h"
#include "store/object_store.h"

namespace vmsnap {
class SnapshotReader;
}

namespace vmsnap::store {

// rados://POOL/NAME or s3://BUCKET/PREFIX/NAME (PREFIX: zero or more
// folders, where the store's objects live; NAME: the last component). For ls
// and gc the NAME part is a prefix of names and may be empty. The one parser
// of store URLs: every command goes through it.
struct StoreUrl {
  std::string scheme;  // "rados" or "s3"
  std::string pool;    // the pool, or the bucket
  std::string prefix;  // s3 only: the key prefix, without its trailing '/'
  std::string name;
  std::string text;    // as given
};
Result<StoreUrl> ParseStoreUrl(const std::string& url, bool name_required);
// Whether an argument is meant as a store URL rather than a file path.
inline bool LooksLikeStoreUrl(const std::string& s) {
  return s.rfind("rados://", 0) == 0 || s.rfind("s3://", 0) == 0;
}
// "rados://POOL" or "s3://BUCKET[/PREFIX]": the store, without a name.
std::string StoreRoot(const StoreUrl& url);
// The URL of snapshot `name` in the store `url` names.
std::string SnapshotUrl(const StoreUrl& url, const std::string& name);

// Opens the store a URL names (`ceph_conf` is for rados:// only; an S3
// store's endpoint and keys come from the environment, S3ConfigFromEnv).
Result<std::unique_ptr<ObjectStore>> OpenStore(const StoreUrl& url, const std::string& ceph_conf);

// Loads the client library a store of `url`'s scheme needs (librados,
// libcurl) in a process that will fork workers which open such stores, so
// that each inherits it loaded.
void PreloadClient(const StoreUrl& url);

// Object names.
std::string ChunkObject(const uint8_t sha256[32]);
std::string LayoutObject(const std::string& name);
inline constexpr char kChunkPrefix[] = "vmsnap.chunk.";
inline constexpr char kLayoutPrefix[] = "vmsnap.snap.";

using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

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

// A stored snapshot's layout, for readers that fetch chunks themselves (the
// lazy cache, store/lazy_cache.h).
struct LayoutChunk {
  uint64_t offset = 0;  // in the file
  uint64_t length = 0;
  std::array<uint8_t, 32> sha{};
};
struct SnapshotLayout {
  uint64_t file_size = 0;
  std::vector<LayoutChunk> chunks;  // by file offset
  std::vector<uint8_t> gaps;        // every byte of the file outside the chunks, in order
  std::array<uint8_t, 32> sha{};    // of the layout object: names the snapshot's content
  layout::SnapshotId id{};          // the snapshot's id (of the manifest, which the gaps hold)
  std::string parent;               // an incremental snapshot's parent, by name in this store
  layout::SnapshotId parent_id{};   // and by the id the child's manifest records
};
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
// One chunk of snapshot `name` into `out` (room for chunk.length + 1
// bytes: one more tells an object of the wrong size), checked against its
// SHA-256; a missing or altered object is named in the error as Pull names
// it. The caller reuses `out` from chunk to chunk.
Status FetchChunk(ObjectStore& store, const std::string& name, const LayoutChunk& chunk, uint8_t* out);
// Runs fn(i) for i in [0, n) on up to `threads` threads (the caller's one
// of them), many store requests in flight at once; the first error wins and
// stops the others from starting new items.
Status ParallelFor(size_t n, unsigned threads, const std::function<Status(size_t)>& fn);

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
