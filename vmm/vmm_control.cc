// SPDX-License-Identifier: MIT
// The VMM's answers on its control socket: one request line in, progress
// lines and one reply out (the protocol: control.h).
#include <chrono>
#include <memory>

#include <nlohmann/json.hpp>

#include "format/layout.h"
#include "vmm/control.h"
#include "vmm/vmm.h"

namespace vmsnap::vmm {

void Vmm::HandleControlRequest(int fd, const std::string& line) {
  auto reply_error = [fd](const std::string& msg) {
    (void)WriteLine(fd, nlohmann::json{{"ok", false}, {"error", msg}}.dump());
  };
  // Every field is type-checked here: a malformed request gets an error
  // reply and the VM runs on.
  auto cmd = ParseControlRequest(line);
  if (!cmd.ok()) return reply_error(cmd.status().message());
  if (cmd->kind == ControlCommand::Kind::kPing) {
    (void)WriteLine(fd, nlohmann::json{{"ok", true}}.dump());
    return;
  }
  SaveRequest sreq;
  sreq.path = cmd->path;
  sreq.parent = cmd->parent;
  sreq.live = cmd->live;
  sreq.compression = cmd->compression;
  sreq.stop = cmd->stop;
  if (cmd->progress) {
    // Progress lines before the reply, at most every 100 ms and the last
    // one always; a client that went away only makes these sends fail.
    auto last = std::make_shared<std::chrono::steady_clock::time_point>();
    save_progress_ = [fd, last](uint64_t done, uint64_t total) {
      auto now = std::chrono::steady_clock::now();
      if (done < total && now - *last < std::chrono::milliseconds(100)) return;
      *last = now;
      (void)WriteLine(fd, nlohmann::json{{"progress", {{"done", done}, {"total", total}}}}.dump());
    };
  }
  capture::dirty::LiveStats live_stats;
  auto r = Save(sreq, &live_stats);
  save_progress_ = nullptr;
  if (!r.ok()) return reply_error(r.status().message());
  nlohmann::json reply{{"ok", true}, {"path", r->path}, {"bytes", r->file_size}, {"id", layout::IdToHex(r->id)}};
  if (sreq.live) {
    reply["rounds"] = live_stats.rounds;
    reply["pause_ns"] = live_stats.pause_ns;
  }
  (void)WriteLine(fd, reply.dump());
  if (sreq.stop) Stop(0, Status::Ok());
}

}  // namespace vmsnap::vmm
