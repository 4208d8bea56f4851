// SPDX-License-Identifier: MIT
// `vmsnap serve` and `vmsnap load --via`: a pool of warm VMs, each prepared
// in the process that will run it, handed one snapshot each through a
// control socket (docs/guest-abi.md, "Warm start").
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "vmm/vmm.h"

namespace vmsnap::vmm {

// A snapshot a worker fetches while it loads it (a store URL): the local file
// to open, the memory loader's fetch hook (restore/memory/loader.h), and what
// to call once the VM is restored.
struct RemoteSnapshot {
  std::string path;
  std::function<Status(size_t layer, size_t chunk)> fetch;
  std::function<void()> restored;
  std::shared_ptr<void> keep;  // what serves `fetch`
};

struct ServeOptions {
  std::string socket;        // the control socket the clients connect to
  int pool = 1;              // warm VMs kept ready of each shape
  // What the warm VMs are made with: a pool of each. A snapshot goes to
  // the pool whose memory size and vCPU count it has; one that fits none
  // starts cold (and says so).
  std::vector<WarmShape> shapes{WarmShape{}};
  std::string kvm_device;    // empty: kvm::DevicePath()
  std::string tool_version = "unknown";
  // Resolves a request's store URL (empty: only absolute paths are served).
  std::function<Result<RemoteSnapshot>(const std::string& url)> open_remote;
  // Whether the server builds the decompressed image of each local snapshot
  // its clients ask for (in the background, one at a time), so that later
  // warm starts of it map the image instead of paging it in. Without, an
  // image built otherwise (`vmsnap load --memory shared`) is still used.
  bool build_images = true;
  // With build_images: the most disk the images in the cache directory may
  // take (0: no bound). The least recently requested go first, never one a
  // VM maps (memory::ImageCache::Trim).
  uint64_t image_cache_size = 0;
  // Run in each warm VM's process before it is ready (opens store sessions
  // that open_remote then uses).
  std::function<void()> prepare_remote;
};

// Serves until SIGINT or SIGTERM (then Ok), or until a warm VM cannot be
// prepared (that error). Guests already handed to clients run on.
Status Serve(const ServeOptions& options);

}  // namespace vmsnap::vmm
