// SPDX-License-Identifier: MIT
// `vmsnap load --via SOCKET SNAPSHOT` once its arguments are known: run by
// the whole tool's `load` (load.cc) and by the `vmsnap` front (front.cc),
// which runs it without starting the rest of the tool. The protocol itself
// is vmm/load_via.h.
#pragma once

#include <string>

namespace vmsnap::cli {

struct LoadViaArgs {
  std::string socket;        // --via: the `vmsnap serve` control socket
  std::string snapshot;      // a file (sent as an absolute path) or a store URL
  std::string serial = "-";  // --serial: a file, or "-" (or "") for stdout
  std::string doorbell;      // --snapshot-on-doorbell ("": none)
};

// Runs the snapshot in a warm VM of the server and returns the exit status
// for the process: the guest's, or kExitVmmFailed after one line on stderr
// ("vmsnap load: ..."). The server's notes (a cold start instead of a warm
// one) go to stderr as they come.
int RunLoadVia(const LoadViaArgs& args);

}  // namespace vmsnap::cli
