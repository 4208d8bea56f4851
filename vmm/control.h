// SPDX-License-Identifier: MIT
// The VMM's control socket protocol (docs/guest-abi.md, "Control socket"):
// one JSON object per line each way over an AF_UNIX stream socket.
//   request:  {"cmd":"save","path":"/abs/out.vmsnap","stop":false}
//   reply:    {"ok":true,"path":"/abs/out.vmsnap","bytes":12345}
//             {"ok":false,"error":"message"}
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "base/fd.h"
#include "base/status.h"
#include "format/compression_spec.h"

namespace vmsnap::vmm {

// The longest request line a client may send, newline excluded.
inline constexpr size_t kMaxRequestLine = 64 * 1024;

// Creates the listening socket at `path`, mode 0600 (it lets its user read
// all guest memory). A socket file at `path` that nothing answers on (left by
// a VM that died) is replaced; one a live VM answers on is refused.
Result<UniqueFd> ListenControl(const std::string& path);

// A request, checked: every field has the type the protocol gives it.
struct ControlCommand {
  enum class Kind { kPing, kSave } kind = Kind::kPing;
  std::string path;    // save: the output
  std::string parent;  // save: empty, or the parent of an incremental snapshot
  bool live = false;
  bool stop = false;
  bool progress = false;
  std::optional<CompressionSpec> compression;
};

// Parses one request line. Never throws: anything malformed (not JSON, not
// an object, a field of the wrong type, an unknown command) is an
// InvalidArgument whose message is sent back to the client as the error.
Result<ControlCommand> ParseControlRequest(std::string_view line);

// Gathers one request line from a non-blocking socket as its bytes arrive,
// so a slow client holds up no one else.
class LineReader {
 public:
  enum class State { kMore, kLine, kTooLong, kClosed };
  // Reads what is available. kLine: line() holds the request; kTooLong: over
  // kMaxRequestLine bytes and no newline; kClosed: EOF or error before a line.
  State Read(int fd);
  const std::string& line() const { return line_; }

 private:
  std::string line_;
};

// Client side: connects, sends one request, returns the reply object.
// Progress lines the VMM sends before the reply (objects with a "progress"
// key and no "ok": {"progress":{"done":N,"total":M}}) go to `on_progress`.
Result<nlohmann::json> ControlRequest(const std::string& path, const nlohmann::json& request,
                                      const std::function<void(const nlohmann::json&)>& on_progress = {});

// The client side's reader of the lines a server sends on a connected
// (blocking) socket: a buffer at a time, not a byte per system call; the
// bytes after a line wait for the next call.
class ReplyReader {
 public:
  explicit ReplyReader(int fd) : fd_(fd) {}
  // The next line, newline excluded. Io: the socket failed or closed before
  // a full line; InvalidArgument: a line longer than kMaxRequestLine.
  Result<std::string> Next();

 private:
  int fd_;
  std::string buf_;
  size_t scanned_ = 0;  // bytes of buf_ already known to hold no newline
};
Status WriteLine(int fd, const std::string& line);

}  // namespace vmsnap::vmm
