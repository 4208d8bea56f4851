// SPDX-License-Identifier: MIT
// vmsnap serve: keeps a pool of warm VMs that `vmsnap load --via` starts
// snapshots in (docs/guest-abi.md, "Warm start").
#include <cstdio>
#include <string>
#include <vector>

#include "tools/command.h"

#include "tools/lazy_remote.h"
#include "tools/vmm_options.h"
#include "vmm/serve.h"
#ifdef VMSNAP_HAVE_STORE
#include "store/lazy_cache.h"
#endif

namespace vmsnap::cli {

void RegisterServe(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand(
      "serve", "Keep warm VMs ready on a control socket; `vmsnap load --via SOCKET` starts a snapshot in one. "
               "Idle warm VMs restore ahead the snapshot recently asked for that has a decompressed image "
               "(docs/guest-abi.md, \"Warm start\")");
  struct Args {
    std::string control;
    int pool = 1;
    std::vector<std::string> mem{"64M"};
    std::vector<int> vcpus{1};
    bool no_image_build = false;
    std::string image_cache_size;
    std::vector<std::string> stores;
    RemoteOptions remote;
  };
  auto args = std::make_shared<Args>();
  sub->add_option("--control", args->control, "the socket clients connect to (created mode 0600)")->required();
  sub->add_option("--pool", args->pool, "warm VMs kept ready of each shape")->required();
  sub->add_option("--mem", args->mem,
                  "guest RAM of the warm VMs, with optional K/M/G suffix (default 64M); several sizes "
                  "(--mem 64M --mem 1G, or --mem 64M,1G) keep a pool of each")
      ->delimiter(',');
  sub->add_option("--vcpus", args->vcpus,
                  "vCPUs of the warm VMs (default 1); several counts keep a pool of each, for each --mem")
      ->delimiter(',');
  sub->add_flag("--no-image-build", args->no_image_build,
                "do not build decompressed images of the snapshots clients ask for (an image built by "
                "`vmsnap load --memory shared` is still used)");
  sub->add_option("--image-cache-size", args->image_cache_size,
                  "bound the decompressed images in the cache directory to SIZE of disk (K/M/G suffix): "
                  "after each image it builds, the server removes the least recently requested ones, never "
                  "one a VM maps (default: no bound)");
  sub->add_option("--store", args->stores,
                  "store URLs: a store (rados://POOL, s3://BUCKET/PREFIX) each warm VM opens a session with "
                  "before its client comes, so that `load --via` of a snapshot in it does not wait for one; "
                  "repeat for several")
      ->delimiter(',');
  AddRemoteOptions(sub, args->remote);
  sub->callback([args, exit_code] {
    auto fail = [exit_code](const std::string& msg) {
      std::fprintf(stderr, "vmsnap serve: %s\n", msg.c_str());
      *exit_code = kExitError;
    };
    vmm::ServeOptions o;
    o.socket = args->control;
    o.pool = args->pool;
    o.build_images = !args->no_image_build;
    if (!args->image_cache_size.empty()) {
      auto size = ParseSize(args->image_cache_size);
      if (!size.ok()) return fail("--image-cache-size: " + size.status().message());
      if (*size == 0) return fail("--image-cache-size must be more than 0");
      if (args->no_image_build) return fail("--image-cache-size bounds the images serve builds: not with --no-image-build");
      o.image_cache_size = *size;
    }
    o.shapes.clear();
    for (const std::string& m : args->mem) {
      auto mem = ParseSize(m);
      if (!mem.ok()) return fail(mem.status().message());
      for (int v : args->vcpus) {
        for (const vmm::WarmShape& have : o.shapes) {
          if (have.mem_size == *mem && have.vcpus == v) return fail("shape " + m + " x " + std::to_string(v) + " vCPUs given twice");
        }
        o.shapes.push_back(vmm::WarmShape{*mem, v});
      }
    }
    o.tool_version = VMSNAP_VERSION;
    if (args->pool < 1 || args->pool > 256) return fail("--pool must be between 1 and 256");
    if (o.shapes.size() * size_t(args->pool) > 256) return fail("at most 256 warm VMs in all (--pool times the shapes)");
    if (Status s = CheckStoreRoots(args->stores); !s.ok()) return fail(s.message());
#ifdef VMSNAP_HAVE_STORE
    // `load --via URL`: each worker fetches its snapshot into the cache
    // (docs/store.md), through the session it opened while it waited.
    const RemoteOptions ro = args->remote;
    if (!args->stores.empty()) {
      PreloadStoreLibraries(args->stores);
      o.prepare_remote = [stores = args->stores, conf = args->remote.ceph_conf] { OpenStoreSessions(stores, conf); };
    }
    o.open_remote = [ro](const std::string& url) -> Result<vmm::RemoteSnapshot> {
      VMSNAP_ASSIGN_OR_RETURN(std::shared_ptr<store::LazyChain> src, OpenRemote(url, ro));
      vmm::RemoteSnapshot r;
      r.path = src->path();
      RemoteHooks hooks = HooksOf(src);
      r.fetch = std::move(hooks.fetch);
      r.restored = std::move(hooks.restored);
      r.keep = src;
      return r;
    };
#endif
    Status s = vmm::Serve(o);
    if (!s.ok()) return fail(s.message());
    *exit_code = kExitOk;
  });
}

}  // namespace vmsnap::cli
