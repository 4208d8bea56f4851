// SPDX-License-Identifier: MIT
// `vmsnap serve` and `vmsnap load --via`: a pool of warm VMs, each prepared
// in the process that will run it, handed one snapshot each through a
// control socket (docs/guest-abi.md, "Warm start").
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "vmm/vmm.h"

namespace vmsnap::vmm {

struct ServeOptions {
  std::string socket;        // the control socket the clients connect to
  int pool = 1;              // warm VMs kept ready of each shape
  // What the warm VMs are made with: a pool of each. A snapshot goes to
  // the pool whose memory size and vCPU count it has; one that fits none
  // starts cold (and says so).
  std::vector<WarmShape> shapes{WarmShape{}};
  std::string kvm_device;    // empty: kvm::DevicePath()
  std::string tool_version = "unknown";
};

// Serves until SIGINT or SIGTERM (then Ok), or until a warm VM cannot be
// prepared (that error). Guests already handed to clients run on.
Status Serve(const ServeOptions& options);

// Client side of `vmsnap load --via`: asks the server at `socket` to run
// `snapshot` (an absolute path) with the guest's serial output on
// `serial_fd` and messages on `err_fd` (both passed to the server), and
// returns the guest's exit status. `on_note` gets what the server says on
// the way (a cold start instead of a warm one).
Result<int> LoadVia(const std::string& socket, const std::string& snapshot, int serial_fd, int err_fd,
                    const std::function<void(const std::string&)>& on_note);

}  // namespace vmsnap::vmm
