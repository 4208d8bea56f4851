// SPDX-License-Identifier: MIT
// The control socket: see control.h.
#include "vmm/control.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace vmsnap::vmm {
namespace {

Result<sockaddr_un> Address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path) {
    return Status::InvalidArgument("control socket path '" + path + "' is empty or too long");
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

}  // namespace

Result<UniqueFd> ListenControl(const std::string& path) {
  VMSNAP_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::FromErrno(errno, "socket");
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  // The umask makes bind create the socket 0600 with no window in which
  // another user could connect.
  mode_t old = ::umask(0177);
  int r = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int err = errno;
  ::umask(old);
  if (r != 0) return Status::FromErrno(err, "cannot bind control socket " + path);
  if (::chmod(path.c_str(), 0600) != 0) return Status::FromErrno(errno, "chmod " + path);
  if (::listen(fd.get(), 8) != 0) return Status::FromErrno(errno, "listen on " + path);
  return fd;
}

Result<std::string> ReadLine(int fd) {
  std::string line;
  char c;
  while (line.size() < 65536) {
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading control socket");
    if (n == 0) return Status::Io("control socket closed before a full line");
    if (c == '\n') return line;
    line.push_back(c);
  }
  return Status::InvalidArgument("control socket line longer than 64 KiB");
}

Status WriteLine(int fd, const std::string& line) {
  std::string s = line + "\n";
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "writing control socket");
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Result<nlohmann::json> ControlRequest(const std::string& path, const nlohmann::json& request,
                                      const std::function<void(const nlohmann::json&)>& on_progress) {
  VMSNAP_ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::FromErrno(errno, "socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = errno;
    return Status(Code::kIo, "cannot connect to control socket " + path + ": " + std::strerror(err));
  }
  VMSNAP_RETURN_IF_ERROR(WriteLine(fd.get(), request.dump()));
  for (;;) {
    VMSNAP_ASSIGN_OR_RETURN(std::string line, ReadLine(fd.get()));
    nlohmann::json reply = nlohmann::json::parse(line, nullptr, false);
    if (reply.is_discarded() || !reply.is_object()) {
      return Status::Io("control socket " + path + " sent a malformed reply");
    }
    if (reply.contains("progress") && !reply.contains("ok")) {
      if (on_progress) on_progress(reply["progress"]);
      continue;
    }
    return reply;
  }
}

}  // namespace vmsnap::vmm
