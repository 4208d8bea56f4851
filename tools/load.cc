// SPDX-License-Identifier: MIT
// vmsnap load: restores a snapshot into a new VM in this process and runs it.
#include <cstdio>
#include <string>

#include "base/cache_dir.h"
#include "tools/command.h"

#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "restore/memory/loader.h"
#include "store/store_url.h"  // LooksLikeStoreUrl (inline): also where the store is not built
#ifdef VMSNAP_HAVE_STORE
#include "store/lazy_cache.h"
#endif
#include "tools/lazy_remote.h"
#include "tools/load_via.h"
#include "tools/progress.h"
#include "tools/tool_util.h"
#include "tools/vmm_options.h"
#include "vmm/vmm.h"

namespace vmsnap::cli {

void RegisterLoad(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand("load", "Restore a snapshot into a new VM and continue running it");
  struct Args {
    std::string snapshot;
    VmmFlags vmm;
    std::string memory = "lazy";
    std::string via;
    RemoteOptions remote;
  };
  auto args = std::make_shared<Args>();
  sub->add_option("SNAPSHOT", args->snapshot,
                  "snapshot file (.vmsnap), or rados://POOL/NAME: memory is fetched from the store as the "
                  "guest needs it (see docs/store.md)")
      ->required();
  AddVmmFlags(sub, args->vmm);
  sub->add_option("--memory", args->memory,
                  "lazy (default): start the vCPUs at once and page memory in on demand "
                  "(userfaultfd) while background threads fill the rest, or map it copy-on-write "
                  "where it can (a --compress none snapshot, or a decompressed image already in "
                  "the cache); shared: as lazy, but build the decompressed image of a compressed "
                  "snapshot in the cache first, so that every later load maps it; eager: decode "
                  "all memory on every core before the vCPUs start")
      ->check(CLI::IsMember({"eager", "lazy", "shared"}));
  AddRemoteOptions(sub, args->remote);
  sub->add_option("--via", args->via,
                  "start the snapshot in a warm VM of `vmsnap serve --control SOCKET` (lazy memory; only "
                  "--serial and --snapshot-on-doorbell apply; doorbell snapshots are full ones)");
  sub->callback([args, exit_code] {
    auto fail = [exit_code](const std::string& msg) {
      std::fprintf(stderr, "vmsnap load: %s\n", msg.c_str());
      *exit_code = kExitVmmFailed;
    };
    if (!args->via.empty()) {
      if (!args->vmm.control.empty() || args->vmm.incremental || args->memory != "lazy") {
        return fail("--via takes no --control, --incremental or --memory (the warm VM decides)");
      }
      *exit_code = RunLoadVia({args->via, args->snapshot, args->vmm.serial, args->vmm.doorbell});
      return;
    }
    auto options = ToVmmOptions(args->vmm);
    if (!options.ok()) return fail(options.status().message());

    // One malloc arena for a lazy load: each new thread's (vCPUs', pager's)
    // first allocation would otherwise set one up, on the way to the first
    // instruction (see vmm/serve_worker.cc). An eager load keeps the default: its
    // fill threads allocate as they decompress.
    if (args->memory == "lazy" || args->memory == "shared") ::mallopt(M_ARENA_MAX, 1);

    // A store URL: the snapshot becomes a local cache file that is filled as
    // the loader asks for chunks. The cluster session is opened on a thread
    // from here on, while the VM is restored (StoreAhead).
    const std::string url_or_path = args->snapshot;
    const bool from_store = store::LooksLikeStoreUrl(args->snapshot);
    const bool lazy = args->memory == "lazy" || args->memory == "shared";
#ifdef VMSNAP_HAVE_STORE
    std::unique_ptr<StoreAhead> ahead;
    if (from_store) {
      if (args->memory == "shared") {
        return fail(url_or_path + ": --memory shared needs a local snapshot file (pull it first)");
      }
      auto started = StoreAhead::Start(args->snapshot, args->remote);
      if (!started.ok()) return fail(started.status().message());
      ahead = std::move(started).value();
    }
#else
    if (from_store) return fail(args->snapshot + ": this vmsnap was built without the chunk store (librados)");
#endif
    std::shared_ptr<void> remote_keep;  // the store source, alive until the VM ends
    std::function<std::string()> summary;

    // While Restore runs, a pager error is only recorded (Restore's own error,
    // if any, explains more); once the VM runs, a chunk that fails its
    // checksum ends the process: a vCPU blocked on that page cannot be
    // interrupted, and it must never be handed a wrong page.
    struct PagerState {
      std::mutex mu;
      bool vm_running = false;
      Status pending;  // an error reported while Restore was still running
    };
    auto ps = std::make_shared<PagerState>();
    std::unique_ptr<tools::ProgressBar> bar;
    // With a store, a worker (or the thread opening the session) may still
    // wait in a store call that cannot be interrupted: end the process
    // rather than wait for it on the way out.
    auto end_now = [&](int code) {
      if (!from_store) return;
      std::fflush(stdout);
      std::fflush(stderr);
      ::_exit(code);
    };
    std::unique_ptr<vmm::Vmm> machine;
    // Twice at most: a chain opened from the cache's record of the name is
    // dropped, before any vCPU ran, if the store says the name now holds
    // other bytes; the second Open reads the store, which Confirm then
    // never contradicts.
    for (int attempt = 0; attempt < 2 && !machine; ++attempt) {
      memory::ChunkFetchFn fetch_chunk;
      std::function<Status()> fetch_all;
      std::function<void()> after_restore;
      std::string snapshot = args->snapshot;
#ifdef VMSNAP_HAVE_STORE
      std::shared_ptr<store::LazyChain> src;
      if (ahead) {
        auto opened = ahead->Open();
        if (!opened.ok()) {
          fail(opened.status().message());
          return end_now(kExitVmmFailed);
        }
        src = std::move(opened).value();
        snapshot = src->path();
        RemoteHooks hooks = HooksOf(src);
        fetch_chunk = std::move(hooks.fetch);
        after_restore = std::move(hooks.restored);
        fetch_all = [src] { return src->FetchAll(); };
        summary = [src, url = url_or_path, &ahead] {
          const store::LazyCacheStats st = src->stats();
          const std::string& record = ahead->Outcome();
          return url + ": " + std::to_string(st.fetched_chunks) + " chunks fetched (" +
                 tools::HumanBytes(st.fetched_bytes) + "), " + std::to_string(st.cached_at_open) + " of " +
                 std::to_string(st.chunks) + " in the cache at start" +
                 (src->kept() ? "" : " (not kept: larger than --cache-size)") + (record.empty() ? "" : "; " + record);
        };
      }
#endif

      vmm::LoadPlan plan;
      if (lazy) {
        plan.lazy = true;
        plan.on_error = [ps](const std::string& message) {
          {
            std::lock_guard<std::mutex> lock(ps->mu);
            if (!ps->vm_running) {
              ps->pending = Status::Io(message);
              return;
            }
          }
          std::fprintf(stderr, "vmsnap load: stopping the VM: %s\n", message.c_str());
          std::fflush(stderr);
          ::_exit(kExitVmmFailed);
        };
        plan.fetch = fetch_chunk;
        // A file filled on demand is never mapped: the pager checks each chunk.
        plan.map_file = !fetch_chunk;
        // Raw snapshots are mapped, verified once per file state.
        if (auto stamps = UserCacheDir("verified"); stamps.ok()) plan.verified_dir = *stamps;
        // Decompressed images (docs/performance.md): used when fresh, built
        // first with --memory shared.
        // Not for a store URL: its local file is filled as the guest asks.
        const bool build = args->memory == "shared";
        if (!fetch_chunk) {
          if (auto images = UserCacheDir("images"); images.ok()) {
            plan.image_dir = *images;
            plan.build_image = build;
          } else if (build) {
            return fail(images.status().message());
          }
        }
      } else {
        plan.progress = [&bar](uint64_t done, uint64_t total) {
          if (!bar) bar = std::make_unique<tools::ProgressBar>("loading memory", total);
          bar->Update(done);
        };
      }
      Result<std::unique_ptr<vmm::Vmm>> restored = Status::Internal("not restored");
      auto restore = [&] {
        if (fetch_all && !lazy) {
          if (Status s = fetch_all(); !s.ok()) {
            restored = s;
            return;
          }
        }
        restored = vmm::Vmm::Restore(snapshot, *options, std::move(plan));
        if (bar) bar->Finish();
      };
      // The store's verdict on the chain comes before any vCPU runs: after
      // a lazy load's restore (what the record gains time for), before an
      // eager load fetches anything. It also comes before Restore's error:
      // a session that failed also failed the chunks Restore waited for.
      if (lazy) restore();
#ifdef VMSNAP_HAVE_STORE
      if (ahead) {
        auto current = ahead->Confirm([&] {
          restored = Status::Internal("restored from an outdated layout");  // the VM goes; it never ran
          std::lock_guard<std::mutex> lock(ps->mu);
          ps->pending = Status::Ok();
        });
        if (!current.ok()) {
          fail(current.status().message());
          return end_now(kExitVmmFailed);
        }
        if (!*current) continue;
      }
#endif
      if (!lazy) restore();
      if (after_restore) after_restore();
      if (!restored.ok()) {
        fail(restored.status().message());
        return end_now(kExitVmmFailed);
      }
      machine = std::move(restored).value();
#ifdef VMSNAP_HAVE_STORE
      remote_keep = src;
#endif
    }
    if (!machine) {
      fail(url_or_path + ": the store's layout changed during both attempts to load it");
      return end_now(kExitVmmFailed);
    }
    if (lazy) {
      std::lock_guard<std::mutex> lock(ps->mu);
      if (!ps->pending.ok()) {
        fail(ps->pending.message());
        return end_now(kExitVmmFailed);
      }
      ps->vm_running = true;
    }
    // The record for the next load, once the guest runs (or has ended
    // without running): it is not on the way to the first instruction.
    std::atomic<bool> ended{false};
    std::thread recorder;
#ifdef VMSNAP_HAVE_STORE
    if (ahead) {
      recorder = std::thread([&ahead, &ended, vm = machine.get()] {
        while (!ended.load() && vm->first_entry_ns() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        ahead->Remember();
      });
    }
#endif
    auto status = machine->Run();
    ended = true;
    if (recorder.joinable()) recorder.join();
    // The pager must stop before the VM's memory is unmapped; errors of the
    // unfinished fill no longer matter once the VM has ended.
    if (lazy) {
      {
        std::lock_guard<std::mutex> lock(ps->mu);
        ps->vm_running = false;
      }
      if (!from_store) machine->StopPager();  // (a store load ends the process below)
    }
    if (!status.ok()) {
      fail(status.status().message());
      return end_now(kExitVmmFailed);
    }
    if (summary) std::fprintf(stderr, "vmsnap load: %s\n", summary().c_str());
    *exit_code = *status & 0xff;
    end_now(*exit_code);
  });
}

}  // namespace vmsnap::cli
