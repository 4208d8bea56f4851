// SPDX-License-Identifier: MIT
// libFuzzer target for the control socket's request lines (-DVMSNAP_FUZZ=ON).
#include "tests/fuzz/parsers_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vmsnap::fuzz::ControlRequestOneInput(data, size);
}
