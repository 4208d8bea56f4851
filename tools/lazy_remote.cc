// SPDX-License-Identifier: MIT
// OpenRemote (lazy_remote.h): URL to store to lazily filled cache file.
#include "tools/lazy_remote.h"

#include <map>
#include <memory>
#include <mutex>

#include "base/cache_dir.h"
#ifdef VMSNAP_HAVE_STORE
#include "store/chunk_store.h"
#include "store/lazy_cache.h"
#endif

namespace vmsnap::cli {

#ifdef VMSNAP_HAVE_STORE
namespace {

// Sessions opened ahead, by store root; each is handed out once (a warm VM's
// process serves one request).
std::mutex sessions_mu;
std::map<std::string, std::unique_ptr<store::ObjectStore>>& Sessions() {
  static auto* m = new std::map<std::string, std::unique_ptr<store::ObjectStore>>();
  return *m;
}

// A store given by itself: all of an s3:// path is the key prefix.
Result<store::StoreUrl> ParseRoot(const std::string& text) {
  VMSNAP_ASSIGN_OR_RETURN(store::StoreUrl url, store::ParseStoreUrl(text, /*name_required=*/false));
  if (url.scheme == "rados" && !url.name.empty()) {
    return Status::InvalidArgument(text + ": names a snapshot; give the store alone (rados://POOL)");
  }
  if (!url.name.empty()) url.prefix = url.prefix.empty() ? url.name : url.prefix + "/" + url.name;
  url.name.clear();
  return url;
}

std::unique_ptr<store::ObjectStore> TakeSession(const std::string& root) {
  std::lock_guard<std::mutex> lock(sessions_mu);
  auto it = Sessions().find(root);
  if (it == Sessions().end()) return nullptr;
  std::unique_ptr<store::ObjectStore> s = std::move(it->second);
  Sessions().erase(it);
  return s;
}

}  // namespace
#endif

void AddRemoteOptions(CLI::App* sub, RemoteOptions& o) {
  sub->add_option("--ceph-conf", o.ceph_conf,
                  "store URLs: ceph.conf of the cluster (default: CEPH_CONF, then /etc/ceph/ceph.conf)");
  sub->add_option("--cache-dir", o.cache_dir,
                  "store URLs: where fetched snapshots are kept (default: ${XDG_CACHE_HOME:-~/.cache}/vmsnap/lazy)");
  sub->add_option("--cache-size", o.cache_size,
                  "store URLs: disk space the cache directory may use, e.g. 16G (default); the least recently "
                  "used snapshots are removed to make room")
      ->transform(CLI::AsSizeValue(false));
  sub->add_option("--fetch-parallel", o.parallel, "store URLs: chunk objects in flight at once (default 8)")
      ->check(CLI::Range(1, 256));
  sub->add_option("--fetch-timeout", o.timeout_s,
                  "store URLs: seconds to wait for a chunk before the VM is stopped (default 10)")
      ->check(CLI::Range(1, 3600));
}

Status CheckStoreRoots(const std::vector<std::string>& roots) {
  for (const std::string& r : roots) {
#ifdef VMSNAP_HAVE_STORE
    VMSNAP_RETURN_IF_ERROR(ParseRoot(r).status());
#else
    return Status::Unsupported(r + ": this vmsnap was built without the chunk store (librados)");
#endif
  }
  return Status::Ok();
}

#ifdef VMSNAP_HAVE_STORE
void PreloadStoreLibraries(const std::vector<std::string>& roots) {
  for (const std::string& r : roots) {
    if (auto url = ParseRoot(r); url.ok()) store::PreloadClient(*url);
  }
}

void OpenStoreSessions(const std::vector<std::string>& roots, const std::string& ceph_conf) {
  for (const std::string& r : roots) {
    auto url = ParseRoot(r);
    if (!url.ok()) continue;
    auto st = store::OpenStore(*url, ceph_conf);
    if (!st.ok()) continue;
    // librados meets an OSD on the first operation on one of its objects:
    // one read of an object that need not exist opens a session with the
    // OSD it maps to (all of them, on a one-OSD cluster). An S3 store's
    // opening already listed the bucket, over the connection it keeps.
    if (url->scheme == "rados") (void)(*st)->Mark(store::kLayoutPrefix);
    std::lock_guard<std::mutex> lock(sessions_mu);
    Sessions()[store::StoreRoot(*url)] = std::move(st).value();
  }
}

RemoteHooks HooksOf(std::shared_ptr<store::LazyChain> src) {
  RemoteHooks h;
  h.fetch = [src](size_t layer, size_t chunk) { return src->Fetch(layer, chunk); };
  h.restored = [src] {
    src->Discard();
    src->StartPrefetch();
  };
  return h;
}

Result<std::shared_ptr<store::LazyChain>> OpenRemote(const std::string& text, const RemoteOptions& options) {
  VMSNAP_ASSIGN_OR_RETURN(store::StoreUrl url, store::ParseStoreUrl(text, /*name_required=*/true));
  std::string dir = options.cache_dir;
  if (dir.empty()) {
    VMSNAP_ASSIGN_OR_RETURN(dir, UserCacheDir("lazy"));
  }
  std::unique_ptr<store::ObjectStore> st = TakeSession(store::StoreRoot(url));
  if (st == nullptr) {
    VMSNAP_ASSIGN_OR_RETURN(st, store::OpenStore(url, options.ceph_conf));
  }
  store::LazyCacheOptions o;
  o.dir = dir;
  o.max_bytes = options.cache_size;
  o.parallel = options.parallel;
  o.timeout_s = options.timeout_s;
  VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<store::LazyChain> src,
                          store::LazyChain::Open(std::move(st), url.name, o));
  return std::shared_ptr<store::LazyChain>(std::move(src));
}

#endif  // VMSNAP_HAVE_STORE

}  // namespace vmsnap::cli
