// SPDX-License-Identifier: MIT
// How long work reports its progress: (done, total), in whatever unit the
// caller documents (bytes, mostly). Who calls it, from which thread and how
// often is said where it is taken.
#pragma once

#include <cstdint>
#include <functional>

namespace vmsnap {

using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

}  // namespace vmsnap
