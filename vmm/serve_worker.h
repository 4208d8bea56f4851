// SPDX-License-Identifier: MIT
// The life of a warm VM's process in `vmsnap serve`: it prepares its own
// KVM VM (a VM belongs to the process that created it), says it is ready,
// may be asked to bind to a snapshot while idle (restore it ahead, from its
// image, up to what depends on when the guest starts), and once handed a
// client reads its request and descriptors, restores the snapshot, runs the
// guest, replies with its exit status and exits.
//
// The channel to the server (a SOCK_SEQPACKET pair), one message each:
//   worker: 'R' PATH   ready, bound to PATH ("": to none)
//           'E' TEXT   could not prepare its VM (then it exits)
//           'P' PATH   (once it has a client) the local snapshot it asked for
//   server: 'C' + fd   a client's connection
//           'B' PATH   bind to PATH (undoing any binding first)
//           'U'        undo any binding (its files changed, or its image's
//                      room is needed)
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>

#include "base/fd.h"
#include "vmm/opened_chains.h"
#include "vmm/serve.h"

namespace vmsnap::vmm {

// The longest snapshot path passed between the server and a worker; longer
// ones are served but not remembered.
constexpr size_t kMaxPathMessage = 4096;

// What a binding to `snapshot` rests on: every layer's file, and its image
// and stamp in `image_dir`, in their present state. The worker keeps them
// to check a request against; the server, to release a binding whose
// files changed while it was idle.
FileStates BindingFiles(const OpenedChain& snapshot, const std::string& image_dir);

// The worker's life: prepare, say ready on `chan`, wait for a client, serve
// it. `opened`: the snapshots the server had opened when it forked.
// `yield`: a refill beside a start that no client queues behind, which
// leaves that start the CPUs for a moment before it prepares its VM.
[[noreturn]] void RunWorker(UniqueFd chan, pid_t server, const ServeOptions& o, const WarmShape& shape,
                            const OpenedChains& opened, bool yield);

}  // namespace vmsnap::vmm
