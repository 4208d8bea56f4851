// SPDX-License-Identifier: MIT
// The exit statuses of `vmsnap`, as README and docs/guest-abi.md state them.
// Apart from command.h so that the `vmsnap` front (front.cc) needs no
// command-line parser to use them.
#pragma once

#include <string_view>

namespace vmsnap::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 2;         // every command but run/load/diff
inline constexpr int kExitDiffDifferent = 1;
inline constexpr int kExitVerifyCorrupt = 1;  // verify: read, and a check failed
inline constexpr int kExitVmmFailed = 125;   // run, load: vmsnap itself failed

// What `command` exits with when vmsnap itself fails or is misused before
// the command runs: kExitVmmFailed for run and load (whose other statuses
// are the guest's), kExitError for the rest.
constexpr int FailureExit(std::string_view command) {
  return command == "run" || command == "load" ? kExitVmmFailed : kExitError;
}

}  // namespace vmsnap::cli
