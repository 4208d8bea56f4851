// SPDX-License-Identifier: MIT
// OpenRemote (lazy_remote.h): URL to store to lazily filled cache file.
#include "tools/lazy_remote.h"

#include "base/cache_dir.h"
#ifdef VMSNAP_HAVE_STORE
#include "store/chunk_store.h"
#include "store/lazy_cache.h"
#endif

namespace vmsnap::cli {

Result<std::shared_ptr<store::LazySnapshot>> OpenRemote(const std::string& text, const RemoteOptions& options) {
#ifdef VMSNAP_HAVE_STORE
  VMSNAP_ASSIGN_OR_RETURN(store::StoreUrl url, store::ParseStoreUrl(text, /*name_required=*/true));
  std::string dir = options.cache_dir;
  if (dir.empty()) {
    VMSNAP_ASSIGN_OR_RETURN(dir, UserCacheDir("lazy"));
  }
  VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<store::ObjectStore> st, store::OpenStore(url, options.ceph_conf));
  store::LazyCacheOptions o;
  o.dir = dir;
  o.max_bytes = options.cache_size;
  o.parallel = options.parallel;
  o.timeout_s = options.timeout_s;
  VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<store::LazySnapshot> src,
                          store::LazySnapshot::Open(std::move(st), url.name, o));
  src->StartPrefetch();
  return std::shared_ptr<store::LazySnapshot>(std::move(src));
#else
  (void)options;
  return Status::Unsupported(text + ": this vmsnap was built without the chunk store (librados)");
#endif
}

}  // namespace vmsnap::cli
