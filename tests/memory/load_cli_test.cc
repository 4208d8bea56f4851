// SPDX-License-Identifier: MIT
// `vmsnap load --memory lazy|eager` end to end: a guest saved over the control
// socket comes back under both modes, and a chunk that fails its checksum
// under lazy loading stops the VM with exit 125 and a message naming it.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "format/reader.h"
#include "tests/cli_fixture.h"

namespace vmsnap::testing {
namespace {

class LoadCli : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // The bench guest spins writing '\n' to the serial port.
    pid_t vm = Spawn({"run", BENCH_GUEST, "--mem", "64M", "--serial", "/dev/null", "--control", Path("ctl")});
    ASSERT_TRUE(WaitForSocket(Path("ctl")));
    RunResult save = Run("save --control ctl --stop s.vmsnap");
    ASSERT_EQ(save.status, 0) << save.err;
    ASSERT_EQ(Wait(vm), 0);
  }
  // Runs load for at most 3 s (the guest never exits): 124 means it was
  // still running, i.e. it loaded and ran.
  int Load(const std::string& snap, const std::string& mode, std::string* err) {
    RunResult r = Run("load " + snap + " --memory " + mode + " --serial out.txt", 3);
    *err = r.err;
    return r.status;
  }
};

TEST_F(LoadCli, BothModesResumeTheGuest) {
  for (const char* mode : {"lazy", "eager"}) {
    std::string err;
    EXPECT_EQ(Load(Path("s.vmsnap"), mode, &err), 124) << mode << ": " << err;
    EXPECT_NE(ReadFile(Path("out.txt")).find('\n'), std::string::npos) << mode << ": no serial output";
  }
}

TEST_F(LoadCli, LazyCorruptChunkStopsTheVmNamingTheChunk) {
  uint64_t off;
  {
    auto r = SnapshotReader::Open(Path("s.vmsnap"));
    ASSERT_TRUE(r.ok());
    // Chunk 1 covers gpa 1-2 MiB, where the guest's code is.
    ASSERT_GT(r.value()->chunk_index()[1].stored_length, 0u);
    off = r.value()->chunk_index()[1].file_offset;
  }
  FILE* f = std::fopen((Path("s.vmsnap")).c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  std::fseek(f, long(off), SEEK_SET);
  const int c = std::fgetc(f);
  std::fseek(f, long(off), SEEK_SET);
  std::fputc(c ^ 0xff, f);
  std::fclose(f);
  std::string err;
  EXPECT_EQ(Load(Path("s.vmsnap"), "lazy", &err), 125) << err;
  EXPECT_NE(err.find("chunk 1 (gpa 0x100000-0x1fffff)"), std::string::npos) << err;
  EXPECT_NE(err.find("checksum mismatch"), std::string::npos) << err;
}

}  // namespace
}  // namespace vmsnap::testing
