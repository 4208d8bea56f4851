// SPDX-License-Identifier: MIT
// Replays every file of tests/fuzz/corpus through the fuzz entry point, so
// each input the fuzzer ever found keeps being checked in the normal build.
#include <dirent.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/format/test_util.h"
#include "tests/fuzz/fuzz_entry.h"

namespace {

TEST(FuzzCorpus, EveryInputReplaysWithoutCrashing) {
  const std::string dir = VMSNAP_FUZZ_CORPUS;
  std::vector<std::string> files;
  DIR* d = opendir(dir.c_str());
  ASSERT_NE(d, nullptr) << dir;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') files.push_back(dir + "/" + e->d_name);
  }
  closedir(d);
  ASSERT_GE(files.size(), 10u);
  for (const auto& f : files) {
    auto bytes = vmsnap::testing::ReadFileBytes(f);
    SCOPED_TRACE(f);
    EXPECT_EQ(vmsnap::fuzz::ReaderOneInput(bytes.data(), bytes.size()), 0);
  }
}

}  // namespace
