// SPDX-License-Identifier: MIT
// Replays tests/fuzz/corpus-control and corpus-numbers through the parsers'
// fuzz entry points, so every input found keeps being checked in the normal
// build; and pins the answers a user sees for a few of them.
#include <dirent.h>
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tests/fuzz/parsers_entry.h"
#include "tools/forensics/cli_util.h"
#ifdef VMSNAP_FUZZ_CONTROL
#include "vmm/control.h"
#endif

namespace {

std::vector<std::string> Corpus(const std::string& name) {
  const std::string dir = std::string(VMSNAP_FUZZ_DIR) + "/" + name;
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(dir + "/" + e->d_name, std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  closedir(d);
  return out;
}

TEST(FuzzParsersCorpus, CliNumbers) {
  auto inputs = Corpus("corpus-numbers");
  ASSERT_GE(inputs.size(), 10u);
  for (const auto& in : inputs) {
    SCOPED_TRACE(in);
    EXPECT_EQ(vmsnap::fuzz::CliNumberOneInput(reinterpret_cast<const uint8_t*>(in.data()), in.size()), 0);
  }
  EXPECT_EQ(vmsnap::forensics::ParseMemorySize("64M").value(), 64u << 20);
  EXPECT_FALSE(vmsnap::forensics::ParseMemorySize("-1").ok());   // once wrapped to a huge size
  EXPECT_FALSE(vmsnap::forensics::ParseMemorySize(" 64M").ok());
  EXPECT_FALSE(vmsnap::forensics::ParseMemorySize("0").ok());
  EXPECT_FALSE(vmsnap::forensics::ParseMemorySize("16777216G").ok());
}

#ifdef VMSNAP_FUZZ_CONTROL
TEST(FuzzParsersCorpus, ControlRequests) {
  auto inputs = Corpus("corpus-control");
  ASSERT_GE(inputs.size(), 10u);
  for (const auto& in : inputs) {
    SCOPED_TRACE(in);
    EXPECT_EQ(vmsnap::fuzz::ControlRequestOneInput(reinterpret_cast<const uint8_t*>(in.data()), in.size()), 0);
  }
  auto live = vmsnap::vmm::ParseControlRequest(R"({"cmd":"save","path":"x.vmsnap","live":"yes"})");
  ASSERT_FALSE(live.ok());
  EXPECT_EQ(live.status().message(), "save: \"live\" must be true or false");
  auto ok = vmsnap::vmm::ParseControlRequest(R"({"cmd":"save","path":"x.vmsnap","live":true,"parent":"p"})");
  ASSERT_TRUE(ok.ok());
  EXPECT_TRUE(ok->live);
  EXPECT_EQ(ok->parent, "p");
}
#endif

}  // namespace
