// SPDX-License-Identifier: MIT
// The client side of the warm pool: `vmsnap load --via` and other programs
// asking a `vmsnap serve` server (serve.h) to run a snapshot. Needs nothing
// of the VMM: the `vmsnap` front links it alone.
#pragma once

#include <functional>
#include <string>

#include "base/status.h"

namespace vmsnap::vmm {

// LoadVia's request on connected socket `fd`: the line and the two
// descriptors in one sendmsg, for programs that read the server's reply
// lines themselves (the JSON keys of docs/guest-abi.md).
Status SendLoadRequest(int fd, const std::string& snapshot, int serial_fd, int err_fd,
                       const std::string& doorbell_snapshot = "");

// `vmsnap load --via`: asks the server at `socket` to run `snapshot` (an
// absolute path, or a store URL the server resolves) with the guest's serial
// output on `serial_fd` and messages on `err_fd` (both passed to the
// server), and returns the guest's exit status. `on_note` gets what the server says on
// the way (a cold start instead of a warm one). A non-empty
// `doorbell_snapshot` (an absolute path, "{n}" numbered) is where the warm
// VM saves a snapshot at each doorbell, as `load --snapshot-on-doorbell`.
Result<int> LoadVia(const std::string& socket, const std::string& snapshot, int serial_fd, int err_fd,
                    const std::function<void(const std::string&)>& on_note,
                    const std::string& doorbell_snapshot = "");

}  // namespace vmsnap::vmm
