// SPDX-License-Identifier: MIT
// The store side of `vmsnap load URL` and of warm starts of a URL: a stored
// snapshot as a local cache file that fills as the memory loader asks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"

namespace vmsnap::store {
class LazySnapshot;
}

namespace vmsnap::cli {

struct RemoteOptions {
  std::string ceph_conf;   // empty: CEPH_CONF, then Ceph's default places
  std::string cache_dir;   // empty: ${XDG_CACHE_HOME:-~/.cache}/vmsnap/lazy
  uint64_t cache_size = 16ull << 30;
  unsigned parallel = 8;
  unsigned timeout_s = 10;
};

// Opens URL's snapshot through its store, creates or reuses its cache file
// and starts the prefetch. Unsupported when this vmsnap has no store layer.
Result<std::shared_ptr<store::LazySnapshot>> OpenRemote(const std::string& url, const RemoteOptions& options);

}  // namespace vmsnap::cli
