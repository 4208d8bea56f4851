// SPDX-License-Identifier: MIT
// Store URLs and opening the store one names (see store_url.h).
#include "store/store_url.h"

#include "store/dl_library.h"

namespace vmsnap::store {

Result<StoreUrl> ParseStoreUrl(const std::string& url, bool name_required) {
  StoreUrl u;
  u.text = url;
  const size_t colon = url.find("://");
  if (colon == std::string::npos) {
    return Status::InvalidArgument(url + ": not a store URL (rados://POOL/NAME or s3://BUCKET/PREFIX/NAME)");
  }
  u.scheme = url.substr(0, colon);
  if (u.scheme != "rados" && u.scheme != "s3") {
    return Status::InvalidArgument(url + ": unknown store scheme " + u.scheme + ":// (rados:// or s3://)");
  }
  const bool s3 = u.scheme == "s3";
  const char* form = s3 ? "s3://BUCKET/PREFIX/NAME" : "rados://POOL/NAME";
  const std::string rest = url.substr(colon + 3);
  const size_t slash = rest.find('/');
  u.pool = rest.substr(0, slash);
  const std::string path = slash == std::string::npos ? "" : rest.substr(slash + 1);
  if (s3) {
    // The last component names the snapshot, the folders before it the
    // store: s3://b/fleet/vm1 keeps its objects under fleet/.
    const size_t last = path.rfind('/');
    u.prefix = last == std::string::npos ? "" : path.substr(0, last);
    u.name = last == std::string::npos ? path : path.substr(last + 1);
    if (!u.prefix.empty() && ("/" + u.prefix + "/").find("//") != std::string::npos) {
      return Status::InvalidArgument(url + ": empty folder name in the key prefix (" + form + ")");
    }
  } else {
    u.name = path;
  }
  if (u.pool.empty()) return Status::InvalidArgument(url + ": no " + (s3 ? "bucket" : "pool") + " (" + form + ")");
  if (name_required && u.name.empty()) return Status::InvalidArgument(url + ": no snapshot name (" + form + ")");
  return u;
}

std::string StoreRoot(const StoreUrl& url) {
  return url.scheme + "://" + url.pool + (url.prefix.empty() ? "" : "/" + url.prefix);
}

std::string SnapshotUrl(const StoreUrl& url, const std::string& name) {
  return StoreRoot(url) + "/" + name;
}

void PreloadClient(const StoreUrl& url) {
  if (url.scheme == "rados") PreloadRados();
#ifdef VMSNAP_HAVE_S3
  if (url.scheme == "s3") PreloadS3();
#endif
}

Result<std::unique_ptr<ObjectStore>> OpenStore(const StoreUrl& url, const std::string& ceph_conf) {
  VMSNAP_RETURN_IF_ERROR(dl::Sha256Available());
  if (url.scheme == "rados") return OpenRados(url.pool, ceph_conf);
  if (!ceph_conf.empty()) {
    return Status::InvalidArgument(url.text + ": --ceph-conf is for rados:// URLs; an S3 store is set by AWS_ENDPOINT_URL");
  }
#ifdef VMSNAP_HAVE_S3
  auto cfg = S3ConfigFromEnv();
  if (!cfg.ok()) return Status(cfg.status().code(), StoreRoot(url) + ": " + cfg.status().message());
  return OpenS3(url.pool, url.prefix, *cfg);
#else
  return Status::Unsupported(url.text + ": this vmsnap was built without S3 support (libcurl)");
#endif
}

}  // namespace vmsnap::store
