// SPDX-License-Identifier: MIT
// The QEMU stream parser's fuzz entry point, shared by the libFuzzer target
// (fuzz_qemu_stream.cc) and the corpus replay test.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vmsnap::fuzz {

// Finds the stream in `data` (bare, libvirt or qcow2), parses it and, if it
// parses, maps it to a manifest as `vmsnap import qemu` does. Returns 0;
// crashes, sanitizer reports and escaping exceptions are the bugs.
int QemuStreamOneInput(const uint8_t* data, size_t size);

}  // namespace vmsnap::fuzz
