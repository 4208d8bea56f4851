// SPDX-License-Identifier: MIT
// Small helpers the offline subcommands share: the one-line error report and
// opening snapshots with the error naming the file.
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"

namespace vmsnap::tools {

// Prints "vmsnap <command>: <file>: <message>" on stderr (the file is left out
// when the message already names it) and returns `exit_code`.
int Fail(std::string_view command, const std::string& file, const Status& status, int exit_code);

// The directory part of a path ("." for a bare name).
std::string DirOf(const std::string& path);

// A parent path as recorded in a child: absolute, or relative to the child's directory.
std::string ResolveParentPath(const std::string& child_path, const std::string& recorded);

}  // namespace vmsnap::tools
