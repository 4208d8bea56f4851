// SPDX-License-Identifier: MIT
// vmsnap load: restores a snapshot into a new VM in this process and runs it.
#include <cstdio>
#include <string>

#include "base/cache_dir.h"
#include "tools/command.h"

#if defined(VMSNAP_HAVE_X86_KVM)
#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <memory>

#include "restore/memory/vmm_loader.h"
#include "tools/progress.h"
#include "tools/vmm_options.h"
#include "vmm/serve.h"
#include "vmm/vmm.h"

namespace vmsnap::cli {

void RegisterLoad(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand("load", "Restore a snapshot into a new VM and continue running it");
  struct Args {
    std::string snapshot;
    VmmFlags vmm;
    std::string memory = "lazy";
    std::string via;
  };
  auto args = std::make_shared<Args>();
  sub->add_option("SNAPSHOT", args->snapshot, "snapshot file (.vmsnap)")->required();
  AddVmmFlags(sub, args->vmm);
  sub->add_option("--memory", args->memory,
                  "lazy (default): start the vCPUs at once and page memory in on demand "
                  "(userfaultfd) while background threads fill the rest, or map it copy-on-write "
                  "where it can (a --compress none snapshot, or a decompressed image already in "
                  "the cache); shared: as lazy, but build the decompressed image of a compressed "
                  "snapshot in the cache first, so that every later load maps it; eager: decode "
                  "all memory on every core before the vCPUs start")
      ->check(CLI::IsMember({"eager", "lazy", "shared"}));
  sub->add_option("--via", args->via,
                  "start the snapshot in a warm VM of `vmsnap serve --control SOCKET` (lazy memory; only "
                  "--serial applies)");
  sub->callback([args, exit_code] {
    auto fail = [exit_code](const std::string& msg) {
      std::fprintf(stderr, "vmsnap load: %s\n", msg.c_str());
      *exit_code = kExitVmmFailed;
    };
    if (!args->via.empty()) {
      if (!args->vmm.control.empty() || !args->vmm.doorbell.empty() || args->memory != "lazy") {
        return fail("--via takes no --control, --snapshot-on-doorbell or --memory (the warm VM decides)");
      }
      char* abs = ::realpath(args->snapshot.c_str(), nullptr);
      if (abs == nullptr) return fail("cannot open snapshot " + args->snapshot + ": " + std::strerror(errno));
      std::string path = abs;
      std::free(abs);
      UniqueFd serial;
      if (args->vmm.serial != "-" && !args->vmm.serial.empty()) {
        serial.Reset(::open(args->vmm.serial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
        if (!serial.valid()) {
          return fail("cannot open serial output " + args->vmm.serial + ": " + std::strerror(errno));
        }
      }
      std::fflush(stdout);
      auto st = vmm::LoadVia(args->via, path, serial.valid() ? serial.get() : STDOUT_FILENO, STDERR_FILENO,
                             [](const std::string& note) { std::fprintf(stderr, "vmsnap load: %s\n", note.c_str()); });
      if (!st.ok()) return fail(st.status().message());
      *exit_code = *st & 0xff;
      return;
    }
    auto options = ToVmmOptions(args->vmm);
    if (!options.ok()) return fail(options.status().message());

    // One malloc arena: each new thread's (vCPUs', pager's) first
    // allocation would otherwise set one up, on the way to the first
    // instruction (see vmm/serve.cc).
    ::mallopt(M_ARENA_MAX, 1);
    std::unique_ptr<restore::MemoryLoader> loader;
    memory::LazyLoader* lazy = nullptr;
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
    if (args->memory == "lazy" || args->memory == "shared") {
      memory::LazyOptions lo;
      lo.on_error = [ps](const Status& s) {
        {
          std::lock_guard<std::mutex> lock(ps->mu);
          if (!ps->vm_running) {
            ps->pending = s;
            return;
          }
        }
        std::fprintf(stderr, "vmsnap load: stopping the VM: %s\n", s.message().c_str());
        std::fflush(stderr);
        ::_exit(kExitVmmFailed);
      };
      auto l = std::make_unique<memory::LazyLoader>(std::move(lo));
      // Raw snapshots are mapped, verified once per file state.
      if (auto stamps = UserCacheDir("verified"); stamps.ok()) l->set_stamp_dir(*stamps);
      // Decompressed images (docs/performance.md): used when fresh, built
      // first with --memory shared.
      const bool build = args->memory == "shared";
      if (auto images = UserCacheDir("images"); images.ok()) {
        l->set_image_dir(*images, build);
      } else if (build) {
        return fail(images.status().message());
      }
      lazy = l.get();
      loader = std::move(l);
    } else {
      memory::EagerOptions eo;
      eo.progress = [&bar](uint64_t done, uint64_t total) {
        if (!bar) bar = std::make_unique<tools::ProgressBar>("loading memory", total);
        bar->Update(done);
      };
      loader = std::make_unique<memory::ParallelEagerLoader>(std::move(eo));
    }
    auto machine = vmm::Vmm::Restore(args->snapshot, *options, loader.get());
    if (bar) bar->Finish();
    if (!machine.ok()) return fail(machine.status().message());
    if (lazy != nullptr) {
      std::lock_guard<std::mutex> lock(ps->mu);
      if (!ps->pending.ok()) return fail(ps->pending.message());
      ps->vm_running = true;
    }
    auto status = (*machine)->Run();
    // The pager must stop before the VM's memory is unmapped; errors of the
    // unfinished fill no longer matter once the VM has ended.
    if (lazy != nullptr) {
      {
        std::lock_guard<std::mutex> lock(ps->mu);
        ps->vm_running = false;
      }
      lazy->Stop();
    }
    if (!status.ok()) return fail(status.status().message());
    *exit_code = *status & 0xff;
  });
}

}  // namespace vmsnap::cli

#else  // no x86-64 KVM in this build (portable cross builds)

namespace vmsnap::cli {

void RegisterLoad(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand("load", "(needs an x86-64 host with KVM)");
  sub->allow_extras();
  sub->callback([exit_code] {
    std::fprintf(stderr, "vmsnap load: this build has no x86-64 KVM support\n");
    *exit_code = kExitVmmFailed;
  });
}

}  // namespace vmsnap::cli

#endif
