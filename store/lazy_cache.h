// SPDX-License-Identifier: MIT
// A stored snapshot as a local file filled on demand, for `vmsnap load URL`:
// the file has the `.vmsnap` layout with every byte but the chunks written
// when it is created (so the ordinary reader opens it), chunks arrive from the
// store when the memory loader asks for them or when the prefetcher gets
// there first, and the file stays in a cache directory for the next load.
//
// A chunk is written into the file only after it matched the SHA-256 it is
// named by; a record beside the file says which chunks are in, and a chunk
// the record claims is checked again (XXH3, the manifest's checksum) the
// first time a process uses it, so neither a crash in the middle of a write
// nor a store that fails part-way can leave a wrong chunk in use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "store/chain_links.h"
#include "store/fetch.h"
#include "store/object_store.h"

namespace vmsnap::store {

struct LazyCacheOptions {
  std::string dir;                       // the cache directory; created if missing
  uint64_t max_bytes = 16ull << 30;      // the directory's limit (disk blocks in use)
  unsigned parallel = 8;                 // fetches in flight
  unsigned timeout_s = 10;               // a chunk the store has not delivered by then fails the load
  // LazyChain::Open fails (NotFound) unless every layer is in the cache
  // already, and then neither makes room nor creates a file: for a chain
  // whose layouts the store has not confirmed yet.
  bool only_cached = false;
};

struct LazyCacheStats {
  uint64_t chunks = 0;            // chunk objects of the snapshot
  uint64_t cached_at_open = 0;    // found in the cache when it was opened
  uint64_t fetched_chunks = 0;    // fetched from the store by this process
  uint64_t fetched_bytes = 0;
};

class LazySnapshot {
 public:
  // Opens (or creates) the cache file of snapshot `name`, whose layout the
  // caller fetched (FetchChain: one layer of a chain; the layers share the
  // store). A new file is kept in the cache when `keep_new` says the caller
  // made room for it (LazyChain::Open), else it is for this load alone
  // (see kept()).
  static Result<std::unique_ptr<LazySnapshot>> Open(std::shared_ptr<ObjectStore> store, const std::string& name,
                                                    SnapshotLayout layout, const LazyCacheOptions& options,
                                                    bool keep_new);
  // Stops the workers; one still waiting for the store after a moment is
  // left to end on its own.
  ~LazySnapshot();
  LazySnapshot(const LazySnapshot&) = delete;
  LazySnapshot& operator=(const LazySnapshot&) = delete;

  // The local file, to open as any snapshot file.
  const std::string& path() const;
  // The file opened (its manifest checked; chunks may still be missing).
  const SnapshotReader& reader() const;
  // False when the file is only for this load: the caller removes it
  // (Discard) once every reader has opened it.
  bool kept() const;
  void Discard();

  // Returns once chunk `index` of the manifest's chunk index is in the file
  // and checked, or with the store's error (naming the chunk object) or a
  // timeout. Thread-safe; a chunk is fetched once however many ask.
  Status Fetch(size_t index);
  // Starts fetching every missing chunk in the background, the ones after
  // recently requested chunks first, then in file order.
  void StartPrefetch();
  // Fetches every missing chunk and returns when all are in (or on the first error).
  Status FetchAll();
  LazyCacheStats stats() const;

  struct Impl;

 private:
  explicit LazySnapshot(std::shared_ptr<Impl> impl);
  // Shared with the workers: one stuck in a store call that outlives us
  // (the cluster went away) keeps what it uses.
  std::shared_ptr<Impl> impl_;
};

// A stored snapshot and its parents (an incremental snapshot's chain), each
// layer a LazySnapshot in the same cache directory, linked where each
// child's manifest looks for its parent (LinkChain), so the chain opens as
// local files do; a full snapshot is a chain of one. Every parent is checked
// to be the one its child was made on (FetchChain). The cache's limit holds
// for the chain as a whole: room is made for all the layers the cache lacks
// before the first of them is created, by removing the least recently used
// other cache files and name records (and the chain folders that link to
// removed files); when they do not fit together none of them is kept, and
// nothing is removed.
class LazyChain {
 public:
  static Result<std::unique_ptr<LazyChain>> Open(std::unique_ptr<ObjectStore> store, const std::string& name,
                                                 const LazyCacheOptions& options);
  // Where the cache directory `dir` keeps the record of name `key` (a file
  // name): what a load found the name to be (`load URL`'s record of the
  // layouts), counted in the cache's limit and removed least recently used
  // first with the cache files; its time is its last use.
  static std::string RecordPath(const std::string& dir, const std::string& key);
  // Writes a name's record of this chain at `path` (RecordPath), making room
  // for it as for a layer (never removing one of this chain's); when there
  // is no room, the old record goes and none is written.
  void KeepRecord(const std::string& path, std::string_view bytes) const;
  // The leaf, to open as any snapshot file.
  const std::string& path() const { return path_; }
  bool kept() const;
  // Once every reader has opened the chain: removes the files not kept
  // (LazySnapshot::Discard) and lets the chain folder go (its folder is
  // held until then, so no other load's eviction removes it first).
  void Discard();
  // Chunk `index` of layer `layer` (0: the root, as SnapshotChain counts).
  Status Fetch(size_t layer, size_t index);
  void StartPrefetch();
  Status FetchAll();
  LazyCacheStats stats() const;  // summed over the layers

 private:
  std::vector<std::unique_ptr<LazySnapshot>> layers_;  // root first
  std::vector<std::string> bases_;  // each layer's cache entry: its path without extension
  std::vector<uint64_t> entry_bytes_;  // and the room it takes once every chunk is in
  std::string path_, dir_;
  uint64_t max_bytes_ = 0;
  std::string folder_;  // the chain folder (LinkChain), if any
  UniqueFd hold_;  // the chain folder, until Discard (LinkChain)
};

}  // namespace vmsnap::store
