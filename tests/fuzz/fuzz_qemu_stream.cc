// SPDX-License-Identifier: MIT
// libFuzzer target for the QEMU migration stream parser and its mapping.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/qemu_stream_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vmsnap::fuzz::QemuStreamOneInput(data, size);
}
