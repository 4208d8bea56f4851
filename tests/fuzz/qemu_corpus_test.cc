// SPDX-License-Identifier: MIT
// Replays the QEMU stream fuzz corpus (corpus-qemu/) through the fuzz entry,
// so every build checks that no seed or past crash crashes the parser.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "tests/fuzz/qemu_stream_entry.h"

namespace {

TEST(QemuStreamCorpus, EveryInputIsHandled) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(VMSNAP_QEMU_CORPUS)) {
    std::ifstream f(e.path(), std::ios::binary);
    std::vector<uint8_t> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    SCOPED_TRACE(e.path().string());
    EXPECT_EQ(vmsnap::fuzz::QemuStreamOneInput(data.data(), data.size()), 0);
    ++n;
  }
  EXPECT_GE(n, 3);
}

}  // namespace
