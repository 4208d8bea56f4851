// SPDX-License-Identifier: MIT
// Descriptors passed over Unix sockets (SCM_RIGHTS): a `load --via` request
// carries the client's serial output and message descriptors, and the
// `serve` server hands each accepted connection to a warm VM's process.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <vector>

#include "base/fd.h"
#include "base/status.h"

namespace vmsnap::vmm {

// The descriptors a `load` request carries: serial output, then messages.
// No message passes more.
constexpr size_t kRequestFds = 2;

// One sendmsg of `len` bytes with `fds` attached; all of it or an error.
Status SendWithFds(int sock, const void* data, size_t len, std::span<const int> fds);

// The one-byte message `tag`, with `fd` attached unless it is negative.
Status SendFd(int sock, char tag, int fd);

// recvmsg of up to `len` bytes; descriptors that came with them are
// appended to `fds` (at most `max_fds`; any beyond are closed).
ssize_t RecvWithFds(int sock, char* buf, size_t len, std::vector<UniqueFd>& fds, size_t max_fds);

}  // namespace vmsnap::vmm
