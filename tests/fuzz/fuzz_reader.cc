// SPDX-License-Identifier: MIT
// libFuzzer target for the .vmsnap reader (built with -DVMSNAP_FUZZ=ON and clang).
#include "tests/fuzz/fuzz_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vmsnap::fuzz::ReaderOneInput(data, size);
}
