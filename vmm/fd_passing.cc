// SPDX-License-Identifier: MIT
// See fd_passing.h.
#include "vmm/fd_passing.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace vmsnap::vmm {

Status SendWithFds(int sock, const void* data, size_t len, std::span<const int> fds) {
  iovec iov{const_cast<void*>(data), len};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kRequestFds)] = {};
  if (fds.size() > kRequestFds) return Status::InvalidArgument("too many descriptors for one message");
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = ctl;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    const ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n == ssize_t(len)) return Status::Ok();
    if (n >= 0) return Status::Io("sendmsg sent " + std::to_string(n) + " of " + std::to_string(len) + " bytes");
    if (errno != EINTR) return Status::FromErrno(errno, "sendmsg");
  }
}

Status SendFd(int sock, char tag, int fd) {
  return SendWithFds(sock, &tag, 1, fd >= 0 ? std::span<const int>(&fd, 1) : std::span<const int>());
}

ssize_t RecvWithFds(int sock, char* buf, size_t len, std::vector<UniqueFd>& fds, size_t max_fds) {
  iovec iov{buf, len};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * 8)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl;
  msg.msg_controllen = sizeof ctl;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t k = 0; k < count; ++k) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
      UniqueFd owned(fd);
      if (fds.size() < max_fds) fds.push_back(std::move(owned));
    }
  }
  return n;
}

}  // namespace vmsnap::vmm
