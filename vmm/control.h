// SPDX-License-Identifier: MIT
// The VMM's control socket protocol (docs/guest-abi.md, "Control socket"):
// one JSON object per line each way over an AF_UNIX stream socket.
//   request:  {"cmd":"save","path":"/abs/out.vmsnap","stop":false}
//   reply:    {"ok":true,"path":"/abs/out.vmsnap","bytes":12345}
//             {"ok":false,"error":"message"}
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "base/fd.h"
#include "base/status.h"
#include "vmm/vmm.h"

namespace vmsnap::vmm {

// Creates the listening socket at `path`, mode 0600 (it lets its user read
// all guest memory). An existing socket file at `path` is replaced.
Result<UniqueFd> ListenControl(const std::string& path);

// Client side: connects, sends one request, returns the reply object.
// Progress lines the VMM sends before the reply (objects with a "progress"
// key and no "ok": {"progress":{"done":N,"total":M}}) go to `on_progress`.
Result<nlohmann::json> ControlRequest(const std::string& path, const nlohmann::json& request,
                                      const std::function<void(const nlohmann::json&)>& on_progress = {});

// Reads one '\n'-terminated line from a connected socket (at most 64 KiB).
Result<std::string> ReadLine(int fd);
Status WriteLine(int fd, const std::string& line);

// One request line, parsed and checked. An error's message is what the
// reply's "error" says.
struct ControlCommand {
  std::string cmd;        // "ping" or "save"
  SaveRequest save;       // for "save"
  bool progress = false;  // "save": progress lines before the reply
};
Result<ControlCommand> ParseControlRequest(const std::string& line);

}  // namespace vmsnap::vmm
