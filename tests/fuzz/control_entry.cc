// SPDX-License-Identifier: MIT
// Fuzz entry: one control request line through ParseControlRequest.
#include <cstdlib>
#include <string_view>

#include "tests/fuzz/parsers_entry.h"
#include "vmm/control.h"

namespace vmsnap::fuzz {

int ControlRequestOneInput(const uint8_t* data, size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  // ParseControlRequest is noexcept in effect: an exception here aborts
  // (the fuzzer reports it), as it once aborted the VMM.
  auto r = vmm::ParseControlRequest(line);
  if (r.ok() && r->kind == vmm::ControlCommand::Kind::kSave) {
    if (r->path.empty() || r->path.find('\0') != std::string::npos) std::abort();
  }
  if (!r.ok() && r.status().message().empty()) std::abort();  // the client must be told why
  return 0;
}

}  // namespace vmsnap::fuzz
