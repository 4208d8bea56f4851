// SPDX-License-Identifier: MIT
// Guest memory comes back whole: a guest (tests/guests/allpages.S) sums one
// qword of every page of its RAM, rings the doorbell (a snapshot), and sums
// again; loaded from that snapshot, lazily or eagerly, compressed or raw, the
// second sum reads every page through the loader and must match the first.
#include <gtest/gtest.h>

#include <string>

#include "tests/cli_fixture.h"

namespace vmsnap::testing {
namespace {

class AllPages : public CliTest {};

TEST_F(AllPages, EveryPageComesBackUnderLazyAndEagerLoad) {
  const std::string guest = std::string(VMSNAP_GUEST_DIR) + "/allpages.elf";
  for (const char* compress : {"zstd", "none"}) {
    SCOPED_TRACE(compress);
    RunResult run = Run("run " + guest + " --mem 64M --compress " + compress +
                        " --snapshot-on-doorbell snap.vmsnap --serial run.txt");
    ASSERT_EQ(run.status, 0) << run.err << ReadFile(Path("run.txt"));
    ASSERT_EQ(ReadFile(Path("run.txt")), "allpages: ok\n");
    for (const char* memory : {"lazy", "eager"}) {
      SCOPED_TRACE(memory);
      RunResult load = Run("load snap.vmsnap --memory " + std::string(memory) + " --serial load.txt");
      EXPECT_EQ(load.status, 0) << load.err;
      EXPECT_EQ(ReadFile(Path("load.txt")), "allpages: ok\n");
    }
  }
}

}  // namespace
}  // namespace vmsnap::testing
