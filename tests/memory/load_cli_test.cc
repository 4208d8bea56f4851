// `vmsnap load --memory lazy|eager` end to end: a guest saved over the control
// socket comes back under both modes, and a chunk that fails its checksum
// under lazy loading stops the VM with exit 125 and a message naming it.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "format/reader.h"

namespace {

std::string Slurp(const std::string& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

int Sh(const std::string& cmd) {
  const int st = std::system(cmd.c_str());
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

class LoadCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is not usable here";
    char tmpl[] = "/tmp/vmsnap-loadcli-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // The bench guest spins writing '\n' to the serial port.
    const std::string sock = dir_ + "/ctl";
    ASSERT_EQ(Sh(std::string("(" VMSNAP_BIN " run " BENCH_GUEST " --mem 64M --serial /dev/null --control ") +
                 sock + " & echo $! > " + dir_ + "/pid)"),
              0);
    for (int i = 0; i < 500 && ::access(sock.c_str(), F_OK) != 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(Sh(std::string(VMSNAP_BIN " save --control ") + sock + " " + dir_ + "/s.vmsnap >/dev/null"), 0);
    Sh("kill -9 $(cat " + dir_ + "/pid)");
  }
  void TearDown() override {
    if (!dir_.empty()) Sh("rm -rf '" + dir_ + "'");
  }
  // Runs load for at most 3 s (the guest never exits): 124 means it was
  // still running, i.e. it loaded and ran.
  int Load(const std::string& snap, const std::string& mode, std::string* err) {
    const int rc = Sh(std::string("timeout 3 " VMSNAP_BIN " load ") + snap + " --memory " + mode +
                      " --serial " + dir_ + "/out.txt 2>" + dir_ + "/err.txt");
    *err = Slurp(dir_ + "/err.txt");
    return rc;
  }
  std::string dir_;
};

TEST_F(LoadCli, BothModesResumeTheGuest) {
  for (const char* mode : {"lazy", "eager"}) {
    std::string err;
    EXPECT_EQ(Load(dir_ + "/s.vmsnap", mode, &err), 124) << mode << ": " << err;
    EXPECT_NE(Slurp(dir_ + "/out.txt").find('\n'), std::string::npos) << mode << ": no serial output";
  }
}

TEST_F(LoadCli, LazyCorruptChunkStopsTheVmNamingTheChunk) {
  uint64_t off;
  {
    auto r = vmsnap::SnapshotReader::Open(dir_ + "/s.vmsnap");
    ASSERT_TRUE(r.ok());
    // Chunk 1 covers gpa 1-2 MiB, where the guest's code is.
    ASSERT_GT(r.value()->chunk_index()[1].stored_length, 0u);
    off = r.value()->chunk_index()[1].file_offset;
  }
  FILE* f = std::fopen((dir_ + "/s.vmsnap").c_str(), "r+b");
  ASSERT_NE(f, nullptr);
  std::fseek(f, long(off), SEEK_SET);
  const int c = std::fgetc(f);
  std::fseek(f, long(off), SEEK_SET);
  std::fputc(c ^ 0xff, f);
  std::fclose(f);
  std::string err;
  EXPECT_EQ(Load(dir_ + "/s.vmsnap", "lazy", &err), 125) << err;
  EXPECT_NE(err.find("chunk 1 (gpa 0x100000-0x1fffff)"), std::string::npos) << err;
  EXPECT_NE(err.find("checksum mismatch"), std::string::npos) << err;
}

}  // namespace
