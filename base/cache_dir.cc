// SPDX-License-Identifier: MIT
// See cache_dir.h.
#include "base/cache_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>

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

std::string FileStamp(const struct stat& st) {
  return std::to_string(st.st_dev) + " " + std::to_string(st.st_ino) + " " + std::to_string(st.st_size) + " " +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + " " +
         std::to_string(st.st_ctim.tv_sec) + "." + std::to_string(st.st_ctim.tv_nsec);
}

std::string FileStampOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "";
  return FileStamp(st);
}

std::string SmallFileTempPrefix(const std::string& path, pid_t pid) {
  return path + ".tmp-" + std::to_string(pid) + ".";
}

Status ReplaceSmallFile(const std::string& path, std::string_view contents) {
  static std::atomic<uint64_t> calls{0};
  const std::string tmp = SmallFileTempPrefix(path, ::getpid()) + std::to_string(calls.fetch_add(1));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(contents.data(), std::streamsize(contents.size()));
    out.flush();
    if (!out) {
      const int e = errno ? errno : EIO;
      ::unlink(tmp.c_str());
      return Status::FromErrno(e, "write " + tmp);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    return Status::FromErrno(e, "rename " + tmp + " to " + path);
  }
  return Status::Ok();
}

}  // namespace vmsnap
