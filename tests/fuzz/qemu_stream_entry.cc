// SPDX-License-Identifier: MIT
// QEMU stream fuzz entry: see qemu_stream_entry.h.
#include "tests/fuzz/qemu_stream_entry.h"

#include <capnp/message.h>

#include <cstdlib>
#include <span>

#include "interop/qemu_container.h"
#include "interop/qemu_stream.h"
#include "interop/qemu_x86.h"

namespace vmsnap::fuzz {

int QemuStreamOneInput(const uint8_t* data, size_t size) {
  namespace iq = interop::qemu;
  auto bytes = iq::ExtractStream(std::span<const uint8_t>(data, size), "input", "");
  if (!bytes.ok()) {
    if (bytes.status().message().empty()) std::abort();
    return 0;
  }
  auto stream = iq::ParseStream(bytes->bytes(), bytes->what);
  if (!stream.ok()) {
    if (stream.status().message().empty()) std::abort();
    return 0;
  }
  capnp::MallocMessageBuilder message;
  iq::ImportOptions opt;
  opt.cpuid.push_back({1, 0, 0, 0x663, 0, 0, 0});
  opt.cpuid.push_back({0x80000008, 0, 0, 0x3028, 0, 0, 0});
  opt.cpuid_source = "fuzz";
  auto imported = iq::ToManifest(*stream, opt, message.initRoot<schema::Manifest>());
  if (!imported.ok() && imported.status().message().empty()) std::abort();
  return 0;
}

}  // namespace vmsnap::fuzz
