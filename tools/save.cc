// SPDX-License-Identifier: MIT
// vmsnap save: asks a running VMM, over its control socket, to save a snapshot.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "tools/command.h"

#include "tools/compression_flag.h"
#include "tools/progress.h"
#include "vmm/control.h"

namespace vmsnap::cli {

void RegisterSave(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand("save", "Save a snapshot of a VM started with --control");
  struct Args {
    std::string control;
    std::string output;
    bool stop = false;
    std::string parent;
    bool live = false;
    std::string compress;
  };
  auto args = std::make_shared<Args>();
  sub->add_option("--control", args->control, "the VMM's control socket")->required();
  sub->add_option("OUTPUT", args->output, "snapshot file to write")->required();
  sub->add_flag("--stop", args->stop,
                "end the VM at the snapshot point, without letting it run again (if the save fails, it runs on)");
  sub->add_option("--parent", args->parent,
                  "incremental snapshot on top of PARENT, which must be the VM's last snapshot (or the one it "
                  "was loaded from): only pages dirtied since are stored");
  sub->add_flag("--live", args->live,
                "copy memory while the guest runs, in rounds, then pause it briefly for the last round");
  AddCompressFlag(sub, args->compress, "compression of this snapshot (default: the VMM's --compress)");
  sub->callback([args, exit_code] {
    // The VMM may run in another directory: send it an absolute path.
    std::error_code ec;
    std::string out = std::filesystem::absolute(args->output, ec).string();
    if (ec) out = args->output;
    nlohmann::json req{{"cmd", "save"}, {"path", out}, {"stop", args->stop}};
    if (args->live) req["live"] = true;
    if (!args->compress.empty()) req["compress"] = args->compress;
    if (!args->parent.empty()) req["parent"] = std::filesystem::absolute(args->parent, ec).string();
    // Progress lines are asked for only when there is a terminal to draw
    // the bar on (ProgressBar is silent otherwise).
    std::unique_ptr<tools::ProgressBar> bar;
    if (::isatty(STDERR_FILENO)) req["progress"] = true;
    auto reply = vmm::ControlRequest(args->control, req, [&bar](const nlohmann::json& p) {
      const uint64_t done = p.value("done", 0ull), total = p.value("total", 0ull);
      if (!bar) bar = std::make_unique<tools::ProgressBar>("saving", total);
      bar->SetTotal(total);
      bar->Update(done);
    });
    if (bar) bar->Finish();
    if (!reply.ok()) {
      std::fprintf(stderr, "vmsnap save: %s\n", reply.status().message().c_str());
      *exit_code = kExitError;
      return;
    }
    if (!reply->value("ok", false)) {
      std::fprintf(stderr, "vmsnap save: %s\n", reply->value("error", std::string("the VMM reported an error")).c_str());
      *exit_code = kExitError;
      return;
    }
    std::printf("saved %s (%llu bytes)%s\n", reply->value("path", out).c_str(),
                static_cast<unsigned long long>(reply->value("bytes", 0ull)), args->stop ? "; VM stopped" : "");
    if (args->live) {
      std::printf("live: %u rounds, paused %.3f ms\n", reply->value("rounds", 0u),
                  static_cast<double>(reply->value("pause_ns", 0ull)) / 1e6);
    }
    *exit_code = kExitOk;
  });
}

}  // namespace vmsnap::cli
