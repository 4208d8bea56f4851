// SPDX-License-Identifier: MIT
// vmsnap's per-user cache, ${XDG_CACHE_HOME:-$HOME/.cache}/vmsnap/SUB:
// created (mode 0700) on first use.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include <sys/stat.h>

#include "base/status.h"

namespace vmsnap {

Result<std::string> UserCacheDir(std::string_view sub);

// A file's identity and last change (device, inode, size, mtime, ctime)
// as one line without a newline, for a cache that must notice the file
// replaced or modified since it looked; "" when it cannot be stat'ed.
std::string FileStamp(const struct stat& st);
std::string FileStampOf(const std::string& path);

// Replaces the small file `path` with `contents` through a temporary beside
// it and rename(2), so a reader sees the old contents or the new, never a
// part. On failure the temporary is removed and `path` is left as it was.
// The temporary is `path`.tmp-PID.N, N counting the calls in this process,
// so that two threads replacing one file do not share it.
Status ReplaceSmallFile(const std::string& path, std::string_view contents);
// What every temporary of ReplaceSmallFile(path) in process `pid` starts
// with ("path.tmp-PID."), for a cleaner of unfinished writes.
std::string SmallFileTempPrefix(const std::string& path, pid_t pid);

}  // namespace vmsnap
