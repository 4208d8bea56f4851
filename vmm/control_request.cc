// SPDX-License-Identifier: MIT
// The control protocol's request side, kept apart from the VMM so the fuzz
// target can build it alone: ParseControlRequest and LineReader (control.h).
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "vmm/control.h"

namespace vmsnap::vmm {

Result<ControlCommand> ParseControlRequest(std::string_view line) {
  nlohmann::json req = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (req.is_discarded() || !req.is_object()) {
    return Status::InvalidArgument("malformed request: expected one JSON object with \"cmd\"");
  }
  auto cmd = req.find("cmd");
  if (cmd == req.end() || !cmd->is_string()) {
    return Status::InvalidArgument("malformed request: \"cmd\" must be a string");
  }
  ControlCommand c;
  const std::string& name = cmd->get_ref<const std::string&>();
  if (name == "ping") return c;
  if (name != "save") return Status::InvalidArgument("unknown command \"" + name + "\"");
  c.kind = ControlCommand::Kind::kSave;
  auto text = [&](const char* key, std::string* out, bool required) -> Status {
    auto it = req.find(key);
    if (it == req.end()) {
      return required ? Status::InvalidArgument(std::string("save: missing \"") + key + "\"") : Status::Ok();
    }
    if (!it->is_string()) return Status::InvalidArgument(std::string("save: \"") + key + "\" must be a string");
    *out = it->get<std::string>();
    return Status::Ok();
  };
  auto flag = [&](const char* key, bool* out) -> Status {
    auto it = req.find(key);
    if (it == req.end()) return Status::Ok();
    if (!it->is_boolean()) {
      return Status::InvalidArgument(std::string("save: \"") + key + "\" must be true or false");
    }
    *out = it->get<bool>();
    return Status::Ok();
  };
  VMSNAP_RETURN_IF_ERROR(text("path", &c.path, true));
  if (c.path.empty()) return Status::InvalidArgument("save: \"path\" is empty");
  if (c.path.find('\0') != std::string::npos) return Status::InvalidArgument("save: \"path\" holds a NUL byte");
  VMSNAP_RETURN_IF_ERROR(text("parent", &c.parent, false));
  VMSNAP_RETURN_IF_ERROR(flag("live", &c.live));
  VMSNAP_RETURN_IF_ERROR(flag("stop", &c.stop));
  VMSNAP_RETURN_IF_ERROR(flag("progress", &c.progress));
  if (req.contains("compress")) {
    std::string spec;
    if (!text("compress", &spec, false).ok()) {
      return Status::InvalidArgument("save: \"compress\" must be a string: none, zstd or zstd:LEVEL");
    }
    auto parsed = ParseCompressionSpec(spec);
    if (!parsed.ok()) return parsed.status().Context("save");
    c.compression = *parsed;
  }
  return c;
}

LineReader::State LineReader::Read(int fd) {
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? State::kMore : State::kClosed;
    if (n == 0) return State::kClosed;
    const char* nl = static_cast<const char*>(std::memchr(buf, '\n', size_t(n)));
    const size_t take = nl ? size_t(nl - buf) : size_t(n);
    if (line_.size() + take > kMaxRequestLine) return State::kTooLong;
    line_.append(buf, take);
    // Bytes after the newline are ignored: one request per connection.
    if (nl) return State::kLine;
  }
}

}  // namespace vmsnap::vmm
