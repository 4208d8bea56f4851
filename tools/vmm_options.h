// SPDX-License-Identifier: MIT
// Flags that `vmsnap run` and `vmsnap load` share (devices and snapshots),
// and size parsing.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <memory>
#include <string>

#include "capture/dirty/tracker.h"
#include "format/compression_spec.h"
#include "base/status.h"
#include "tools/compression_flag.h"
#include "tools/forensics/cli_util.h"
#include "tools/progress.h"
#include "vmm/vmm.h"

namespace vmsnap::cli {

struct VmmFlags {
  std::string serial = "-";
  std::string control;
  std::string doorbell;
  bool incremental = false;
  std::string compress;  // empty: zstd:3
  std::string dirty_tracking;  // empty: the ring when the host has it, else the bitmap
};

inline void AddVmmFlags(CLI::App* sub, VmmFlags& f) {
  sub->add_option("--serial", f.serial, "where guest serial output goes: a file, or - for stdout (default)");
  sub->add_option("--control", f.control, "control socket for `vmsnap save` (created mode 0600)");
  auto* door = sub->add_option("--snapshot-on-doorbell", f.doorbell,
                               "save a snapshot here at each doorbell; {n} is replaced by its number from 1");
  sub->add_flag("--incremental", f.incremental,
                "each doorbell snapshot after the first (after load: every one) names the previous one as "
                "parent and stores only the pages dirtied since")
      ->needs(door);
  AddCompressFlag(sub, f.compress,
                  "compression of doorbell snapshots, and of `vmsnap save` without --compress");
  sub->add_option("--dirty-tracking", f.dirty_tracking,
                  "ring|bitmap|off: how pages dirtied between snapshots are tracked, for incremental and live "
                  "snapshots (default: the ring when the host has it, else the bitmap)")
      ->check(CLI::IsMember({"ring", "bitmap", "off"}));
}

inline Result<vmm::VmmOptions> ToVmmOptions(const VmmFlags& f) {
  vmm::VmmOptions o;
  o.serial = f.serial;
  o.control_socket = f.control;
  o.doorbell_snapshot = f.doorbell;
  o.incremental = f.incremental;
  if (!f.compress.empty()) {
    VMSNAP_ASSIGN_OR_RETURN(o.compression, ParseCompressionSpec(f.compress));
  }
  if (!f.dirty_tracking.empty()) {
    VMSNAP_ASSIGN_OR_RETURN(o.dirty_tracking, capture::dirty::ParseMode(f.dirty_tracking));
  }
  // Refused here rather than quietly writing full snapshots at each doorbell.
  if (o.incremental && o.dirty_tracking == capture::dirty::Mode::kOff) {
    return Status::InvalidArgument("--incremental needs dirty tracking; it cannot be used with --dirty-tracking off");
  }
  // Doorbell snapshots get a progress bar on stderr (shown only on a
  // terminal, and only for a save that takes more than half a second).
  o.doorbell_progress = [] {
    auto bar = std::make_shared<tools::ProgressBar>("saving snapshot", 0);
    return ProgressFn([bar](uint64_t done, uint64_t total) {
      bar->SetTotal(total);
      bar->Update(done);
      if (done >= total) bar->Finish();
    });
  };
  // A failed doorbell snapshot ends nothing: it is reported and the guest
  // runs on, as after a failed `vmsnap save`.
  o.report = [](const Status& s) { std::fprintf(stderr, "vmsnap: %s (the VM goes on)\n", s.message().c_str()); };
  o.tool_version = VMSNAP_VERSION;
  return o;
}

// "64M", "1G", "4096", "512K" -> bytes (forensics::ParseMemorySize).
inline Result<uint64_t> ParseSize(const std::string& s) { return forensics::ParseMemorySize(s); }

}  // namespace vmsnap::cli
