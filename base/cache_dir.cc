// SPDX-License-Identifier: MIT
// See cache_dir.h.
#include "base/cache_dir.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>

namespace vmsnap {

Result<std::string> UserCacheDir(std::string_view sub) {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  std::string dir = xdg && *xdg ? std::string(xdg) : std::string(home && *home ? home : "/tmp") + "/.cache";
  dir += "/vmsnap";
  if (!sub.empty()) dir += "/" + std::string(sub);
  // mkdir -p, private to the user.
  for (size_t at = dir.find('/', 1);; at = dir.find('/', at + 1)) {
    const std::string part = at == std::string::npos ? dir : dir.substr(0, at);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) {
      return Status::FromErrno(errno, "create the cache directory " + part);
    }
    if (at == std::string::npos) break;
  }
  return dir;
}

}  // namespace vmsnap
