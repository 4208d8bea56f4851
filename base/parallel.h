// SPDX-License-Identifier: MIT
// Running independent items on a few threads (many store requests in flight
// at once, say), the first error stopping the rest.
#pragma once

#include <cstddef>
#include <functional>

#include "base/status.h"

namespace vmsnap {

// Runs fn(i) for i in [0, n) on up to `threads` threads (the caller's one
// of them); the first error wins and stops the others from starting new
// items.
Status ParallelFor(size_t n, unsigned threads, const std::function<Status(size_t)>& fn);

}  // namespace vmsnap
