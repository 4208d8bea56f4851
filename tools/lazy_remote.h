// SPDX-License-Identifier: MIT
// The store side of `vmsnap load URL` and of warm starts of a URL: a stored
// snapshot as a local cache file that fills as the memory loader asks.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/status.h"

namespace vmsnap::store {
class LazyChain;
}

namespace vmsnap::cli {

struct RemoteOptions {
  std::string ceph_conf;   // empty: CEPH_CONF, then Ceph's default places
  std::string cache_dir;   // empty: ${XDG_CACHE_HOME:-~/.cache}/vmsnap/lazy
  uint64_t cache_size = 16ull << 30;
  unsigned parallel = 8;
  unsigned timeout_s = 10;
};

// --ceph-conf, --cache-dir, --cache-size, --fetch-parallel and
// --fetch-timeout into `options`: the same for every command that loads a
// store URL (`load`, `serve`).
void AddRemoteOptions(CLI::App* sub, RemoteOptions& options);

// Checks that each of `roots` (rados://POOL, s3://BUCKET[/PREFIX]) is a store
// URL, for a command line.
Status CheckStoreRoots(const std::vector<std::string>& roots);
#ifdef VMSNAP_HAVE_STORE
// The rest exists where the store layer does; its callers are built only
// there.

// Opens URL's snapshot through its store and creates or reuses its cache
// file; the caller starts the prefetch once the VM is restored (before, it
// would take the CPU the restore needs).
// A session OpenStoreSessions opened for the URL's store is used (once)
// instead of connecting.
Result<std::shared_ptr<store::LazyChain>> OpenRemote(const std::string& url, const RemoteOptions& options);

// `vmsnap load URL` in a fresh process, where librados's own start (loading
// it, the monitor session, the maps: about 20 ms of CPU here) dominates the
// time to the first instruction. Start connects on a thread at once; Open
// opens the chain meanwhile from the layouts the cache recorded for the URL
// at its last confirmed load (docs/store.md), without waiting for the
// store, so the VM is restored while librados starts. A name may have been
// pushed again with other bytes since: Confirm, before any vCPU runs,
// compares the recorded layout objects with the store's. Without a record,
// Open waits for the session (as OpenRemote does). Chunk fetches always go
// to the store (waiting for the session if need be): a chunk is named by
// its bytes, so no fetch can give a stale one.
class StoreAhead {
 public:
  static Result<std::unique_ptr<StoreAhead>> Start(const std::string& url, const RemoteOptions& options);
  ~StoreAhead();
  // The chain of the URL's name: from the record when there is one (and it
  // opens), else from the store.
  Result<std::shared_ptr<store::LazyChain>> Open();
  // Waits for the store's verdict on the chain the last Open gave. True:
  // it is the name's content now (Remember records it). False:
  // the name changed (or went) since it was recorded: `drop` is called
  // first, to end what was made from the chain (a restored VM: its loader
  // still reads the chain's files), and then the chain is discarded; the
  // caller calls Open again, which reads the store. An error: the store's,
  // as OpenRemote would report it (no such pool, connect, ...).
  Result<bool> Confirm(const std::function<void()>& drop);
  // Records the layout objects of the chain Confirm accepted, for the next
  // load; nothing before Confirm said true. For once the guest runs: the
  // record is not on the way to its first instruction.
  void Remember();
  // For the load's closing line: "" when no record was used, else whether
  // the VM started from the record or the record was outdated.
  const std::string& Outcome() const;

  struct State;

 private:
  StoreAhead() = default;
  std::shared_ptr<State> state_;
};

// What a VM's memory loader needs of an opened store snapshot: its chunks
// fetched on fault (the cache file is one layer), and once the VM is
// restored, the cache's restore-time view dropped and the prefetch started.
struct RemoteHooks {
  std::function<Status(size_t layer, size_t chunk)> fetch;
  std::function<void()> restored;
};
RemoteHooks HooksOf(std::shared_ptr<store::LazyChain> src);

// Opens a session with each store of `roots` ahead of any request, for the
// next OpenRemote of a URL in it: a new cluster session costs tens of
// milliseconds (librados's authentication and maps), which a warm start
// should not wait for. A store that cannot be reached now is skipped: the
// request that names it connects itself and reports the error.
void OpenStoreSessions(const std::vector<std::string>& roots, const std::string& ceph_conf);
// Loads the client libraries the stores of `roots` need, in a process that
// will fork the workers that open them.
void PreloadStoreLibraries(const std::vector<std::string>& roots);

#endif  // VMSNAP_HAVE_STORE

}  // namespace vmsnap::cli
