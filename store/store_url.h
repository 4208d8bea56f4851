// SPDX-License-Identifier: MIT
// Store URLs (rados://POOL/NAME, s3://BUCKET/PREFIX/NAME): the one parser of
// them, and opening the store one names.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "store/object_store.h"

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

}  // namespace vmsnap::store
