// SPDX-License-Identifier: MIT
// The reader fuzz entry point, shared by the libFuzzer target and the corpus
// replay test so the corpus runs as an ordinary ctest in every build.
#pragma once

#include <cstddef>
#include <cstdint>

namespace vmsnap::fuzz {

// Opens `data` as a snapshot and, if it opens, verifies and reads every chunk,
// computes statistics and walks the whole manifest as a tool would. Returns 0.
// Crashes (or sanitizer reports, or an escaping exception) are the bugs.
int ReaderOneInput(const uint8_t* data, size_t size);

}  // namespace vmsnap::fuzz
