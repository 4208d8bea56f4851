// SPDX-License-Identifier: MIT
// See load_via.h.
#include "vmm/load_via.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <string>

#include "base/fd.h"
#include "vmm/control.h"
#include "vmm/fd_passing.h"

namespace vmsnap::vmm {

Status SendLoadRequest(int fd, const std::string& snapshot, int serial_fd, int err_fd,
                       const std::string& doorbell_snapshot) {
  nlohmann::json req{{"cmd", "load"}, {"snapshot", snapshot}};
  if (!doorbell_snapshot.empty()) req["snapshot_on_doorbell"] = doorbell_snapshot;
  const std::string line = req.dump() + "\n";
  // The line is short: one sendmsg carries all of it with the descriptors.
  const int pass[kRequestFds] = {serial_fd, err_fd};
  return SendWithFds(fd, line.data(), line.size(), pass);
}

Result<int> LoadVia(const std::string& socket, const std::string& snapshot, int serial_fd, int err_fd,
                    const std::function<void(const std::string&)>& on_note, const std::string& doorbell_snapshot) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (socket.empty() || socket.size() >= sizeof a.sun_path) {
    return Status::InvalidArgument("socket path '" + socket + "' is empty or too long");
  }
  std::memcpy(a.sun_path, socket.c_str(), socket.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::FromErrno(errno, "socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return Status::FromErrno(errno, "cannot connect to " + socket);
  }
  Status sent = SendLoadRequest(fd.get(), snapshot, serial_fd, err_fd, doorbell_snapshot);
  if (!sent.ok()) return Status::Io("sending the request to " + socket + ": " + sent.message());
  ReplyReader replies(fd.get());
  for (;;) {
    auto reply = replies.Next();
    if (!reply.ok()) {
      if (reply.status().code() == Code::kInvalidArgument) return Status::Io("unreadable reply from " + socket);
      return Status::Io(socket + " closed the connection before the guest's exit status");
    }
    nlohmann::json j = nlohmann::json::parse(*reply, nullptr, false);
    if (!j.is_object()) return Status::Io("unreadable reply from " + socket);
    if (j.contains("note") && j["note"].is_string()) {
      if (on_note) on_note(j["note"].get<std::string>());
      continue;
    }
    if (j.value("ok", false) && j.contains("exit_status") && j["exit_status"].is_number_integer()) {
      return j["exit_status"].get<int>();
    }
    if (j.contains("error") && j["error"].is_string()) return Status::Io(j["error"].get<std::string>());
    return Status::Io("unreadable reply from " + socket);
  }
}

}  // namespace vmsnap::vmm
