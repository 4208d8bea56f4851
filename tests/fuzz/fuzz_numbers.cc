// SPDX-License-Identifier: MIT
// libFuzzer target for the CLI's size and address parsing (-DVMSNAP_FUZZ=ON).
#include "tests/fuzz/parsers_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vmsnap::fuzz::CliNumberOneInput(data, size);
}
