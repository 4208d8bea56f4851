// SPDX-License-Identifier: MIT
// vmsnap's per-user cache, ${XDG_CACHE_HOME:-$HOME/.cache}/vmsnap/SUB:
// created (mode 0700) on first use.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace vmsnap {

Result<std::string> UserCacheDir(std::string_view sub);

}  // namespace vmsnap
