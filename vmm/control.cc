// SPDX-License-Identifier: MIT
// The control socket's transport (see control.h): the listening socket, the
// line reader and writer, and the client's request. Nothing here knows the
// VMM (vmm_control.cc answers its requests), so that a client such as the
// `vmsnap` front links it alone.
#include "vmm/control.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
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
  if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    // Only a socket nobody answers on is stale; taking over a live VM's
    // would leave that VM unreachable.
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (probe.valid() && ::connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      return Status::InvalidArgument("control socket " + path +
                                     " is in use: a running VM answers on it (choose another path)");
    }
    ::unlink(path.c_str());
  }
  // Bound under a temporary name and linked into place once it listens:
  // a client that waits for the path to appear and then connects must
  // never find a socket that refuses it. (A path too long for a temporary
  // name beside it is bound in place.)
  const std::string temp = path + ".tmp-" + std::to_string(::getpid());
  const bool renamed = Address(temp).ok();
  VMSNAP_ASSIGN_OR_RETURN(sockaddr_un bind_addr, Address(renamed ? temp : path));
  if (renamed) ::unlink(temp.c_str());
  // The umask makes bind create the socket 0600 with no window in which
  // another user could connect.
  mode_t old = ::umask(0177);
  int r = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&bind_addr), sizeof bind_addr);
  int err = errno;
  ::umask(old);
  if (r != 0) return Status::FromErrno(err, "cannot bind control socket " + path);
  const std::string& bound = renamed ? temp : path;
  auto fail = [&](const std::string& what) {
    const int e = errno;
    if (renamed) ::unlink(temp.c_str());
    return Status::FromErrno(e, what);
  };
  if (::chmod(bound.c_str(), 0600) != 0) return fail("chmod " + bound);
  if (::listen(fd.get(), 8) != 0) return fail("listen on " + path);
  if (renamed) {
    // link, not rename: whatever else is at the path stays as it was.
    if (::link(temp.c_str(), path.c_str()) != 0) {
      if (errno == EEXIST) errno = EADDRINUSE;  // as bind in place says
      return fail("cannot bind control socket " + path);
    }
    ::unlink(temp.c_str());
  }
  return fd;
}

Result<std::string> ReplyReader::Next() {
  for (;;) {
    if (const size_t nl = buf_.find('\n', scanned_); nl != std::string::npos) {
      std::string line = buf_.substr(0, nl);
      buf_.erase(0, nl + 1);
      scanned_ = 0;
      return line;
    }
    scanned_ = buf_.size();
    if (buf_.size() > kMaxRequestLine) return Status::InvalidArgument("control socket line longer than 64 KiB");
    char chunk[4096];
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "reading control socket");
    if (n == 0) return Status::Io("control socket closed before a full line");
    buf_.append(chunk, size_t(n));
  }
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
  ReplyReader replies(fd.get());
  for (;;) {
    VMSNAP_ASSIGN_OR_RETURN(std::string line, replies.Next());
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
