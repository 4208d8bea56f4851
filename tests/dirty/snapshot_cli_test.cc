// SPDX-License-Identifier: MIT
// Incremental and live snapshots end to end, through the `vmsnap` binary on
// real KVM: run a guest, snapshot at doorbells or over the control socket,
// check what each file holds, load it and compare the guest's output.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "format/chain.h"
#include "format/reader.h"
#include "kvm/kvm.h"
#include "tests/cli_fixture.h"

namespace vmsnap::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr uint64_t kData = 0x200000;  // incr_rounds.S
constexpr uint64_t kDataPages = 512;

std::string Guest(const std::string& name) { return std::string(VMSNAP_DIRTY_GUEST_DIR) + "/" + name + ".elf"; }

// The end-to-end fixture (tests/cli_fixture.h).
// Two runs of a guest are compared page by page, so every start writes the
// same (zero) generation ID instead of a random one.
class DirtyCli : public CliTest {
 protected:
  void SetUp() override {
    ::setenv("VMSNAP_TEST_FIXED_GENERATION_ID", "1", 1);
    CliTest::SetUp();
  }
  void TearDown() override {
    CliTest::TearDown();
    ::unsetenv("VMSNAP_TEST_FIXED_GENERATION_ID");
  }
};

// Guest-physical addresses of the pages a snapshot defines itself.
std::set<uint64_t> DefinedPages(const SnapshotReader& r) {
  std::set<uint64_t> out;
  for (const ChunkInfo& c : r.chunk_index()) {
    for (uint32_t i = 0; i < c.page_count; ++i) {
      if (c.IsDefined(i)) out.insert(c.gpa + uint64_t(i) * r.page_size());
    }
  }
  return out;
}

std::set<uint64_t> RoundPages(int round) {
  std::set<uint64_t> out;
  for (uint64_t p = 0; p < kDataPages; ++p) {
    if (p % (round + 2) == 0) out.insert(kData + p * 4096);
  }
  return out;
}

class IncrementalChain : public DirtyCli, public ::testing::WithParamInterface<std::string> {};

// Five doorbells with --incremental: the first snapshot is full, each later
// one holds exactly the pages the guest wrote since the one before and names
// it as parent; loading the last restores the chain, with memory identical to
// a full snapshot taken at the same doorbell and the same guest output.
TEST_P(IncrementalChain, HoldsExactlyTheDirtiedPagesAndLoadsLikeAFullSnapshot) {
  const std::string mode = GetParam();
  RunResult inc = Run("run " + Guest("incr_rounds") + " --dirty-tracking " + mode +
                      " --snapshot-on-doorbell 'inc-{n}.vmsnap' --incremental --serial inc.txt");
  ASSERT_EQ(inc.status, 0) << inc.err;
  RunResult full = Run("run " + Guest("incr_rounds") + " --dirty-tracking off --snapshot-on-doorbell "
                       "'full-{n}.vmsnap' --serial full.txt");
  ASSERT_EQ(full.status, 0) << full.err;
  std::string uninterrupted = ReadFile(Path("full.txt"));
  EXPECT_EQ(ReadFile(Path("inc.txt")), uninterrupted);

  layout::SnapshotId prev{};
  for (int n = 1; n <= 5; ++n) {
    auto r = SnapshotReader::Open(Path("inc-" + std::to_string(n) + ".vmsnap"));
    ASSERT_TRUE(r.ok()) << r.status().message();
    auto m = (*r)->manifest();
    if (n == 1) {
      EXPECT_FALSE(m.hasParent()) << "the first snapshot of a process is full";
    } else {
      ASSERT_TRUE(m.hasParent());
      auto id = m.getParent().getSnapshotId();
      ASSERT_EQ(id.size(), 16u);
      EXPECT_TRUE(std::equal(id.begin(), id.end(), prev.begin())) << "snapshot " << n << " names the wrong parent";
      EXPECT_EQ(std::string(m.getParent().getPath().cStr()), "inc-" + std::to_string(n - 1) + ".vmsnap");
      EXPECT_EQ(m.getParent().getDepth(), static_cast<uint32_t>(n - 1));
      // Doorbell n follows round n-1; the VMM itself writes no guest memory
      // while the guest runs, so nothing else is dirty.
      EXPECT_EQ(DefinedPages(**r), RoundPages(n - 1)) << "snapshot " << n;
    }
    prev = (*r)->id();
  }

  auto chain = SnapshotChain::Open(Path("inc-5.vmsnap"));
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  EXPECT_EQ(chain->layers().size(), 5u);
  auto flat = SnapshotChain::Open(Path("full-5.vmsnap"));
  ASSERT_TRUE(flat.ok()) << flat.status().message();
  const uint64_t size = 64ull << 20;
  std::vector<uint8_t> a(size), b(size);
  ASSERT_TRUE(chain->ReadMemory(0, size, a.data()).ok());
  ASSERT_TRUE(flat->ReadMemory(0, size, b.data()).ok());
  EXPECT_TRUE(a == b) << "chain memory differs from the full snapshot at the same doorbell";

  RunResult load = Run("load inc-5.vmsnap --serial load.txt");
  ASSERT_EQ(load.status, 0) << load.err;
  std::string after = ReadFile(Path("load.txt"));
  ASSERT_FALSE(after.empty());
  EXPECT_EQ(after, uninterrupted.substr(uninterrupted.size() - after.size()));
  EXPECT_EQ(after.rfind("hash ", 0), 0u) << after;
}

INSTANTIATE_TEST_SUITE_P(Modes, IncrementalChain, ::testing::Values("ring", "bitmap"));

TEST_F(DirtyCli, LoadRefusesAChainWithAMissingOrReplacedParent) {
  ASSERT_EQ(Run("run " + Guest("incr_rounds") + " --snapshot-on-doorbell 'inc-{n}.vmsnap' --incremental "
                "--serial /dev/null").status, 0);
  ASSERT_EQ(Run("run " + Guest("incr_rounds") + " --snapshot-on-doorbell 'other-{n}.vmsnap' --serial /dev/null")
                .status, 0);
  fs::rename(Path("inc-3.vmsnap"), Path("saved-3.vmsnap"));
  RunResult missing = Run("load inc-5.vmsnap --serial /dev/null");
  EXPECT_EQ(missing.status, 125);
  EXPECT_NE(missing.err.find("inc-3.vmsnap of "), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("is missing"), std::string::npos) << missing.err;
  fs::copy_file(Path("other-3.vmsnap"), Path("inc-3.vmsnap"));
  RunResult replaced = Run("load inc-5.vmsnap --serial /dev/null");
  EXPECT_EQ(replaced.status, 125);
  EXPECT_NE(replaced.err.find("is not the recorded file"), std::string::npos) << replaced.err;
}

class LoadIncremental : public DirtyCli, public ::testing::WithParamInterface<const char*> {};

// `load --dirty-tracking MODE`: the loaded VM tracks with that mode from its
// first instruction, so its first doorbell snapshot holds exactly the pages
// the guest dirtied after the loaded one.
TEST_P(LoadIncremental, DoorbellsBuildOnTheLoadedSnapshot) {
  ASSERT_EQ(Run("run " + Guest("incr_rounds") + " --snapshot-on-doorbell 'a-{n}.vmsnap' --serial /dev/null").status,
            0);
  // Resume from doorbell 2: the next three doorbells are all incremental,
  // the first on a-2.
  RunResult load = Run("load a-2.vmsnap --dirty-tracking " + std::string(GetParam()) +
                       " --snapshot-on-doorbell 'b-{n}.vmsnap' --incremental --serial /dev/null");
  ASSERT_EQ(load.status, 0) << load.err;
  auto b1 = SnapshotReader::Open(Path("b-1.vmsnap"));
  auto a2 = SnapshotReader::Open(Path("a-2.vmsnap"));
  ASSERT_TRUE(b1.ok() && a2.ok());
  ASSERT_TRUE((*b1)->manifest().hasParent());
  auto id = (*b1)->manifest().getParent().getSnapshotId();
  EXPECT_TRUE(std::equal(id.begin(), id.end(), (*a2)->id().begin()));
  EXPECT_EQ(DefinedPages(**b1), RoundPages(2));
  auto chain = SnapshotChain::Open(Path("b-3.vmsnap"));
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  EXPECT_EQ(chain->layers().size(), 4u);
}

INSTANTIATE_TEST_SUITE_P(Modes, LoadIncremental, ::testing::Values("ring", "bitmap"));

// Without tracking, `load` has nothing to build an incremental snapshot on.
TEST_F(DirtyCli, LoadWithoutTrackingRefusesIncrementalDoorbells) {
  ASSERT_EQ(Run("run " + Guest("incr_rounds") + " --snapshot-on-doorbell 'a-{n}.vmsnap' --serial /dev/null").status,
            0);
  RunResult load = Run("load a-2.vmsnap --dirty-tracking off --snapshot-on-doorbell 'b-{n}.vmsnap' --incremental "
                       "--serial /dev/null");
  EXPECT_EQ(load.status, 125);
  EXPECT_NE(load.err.find("dirty tracking"), std::string::npos) << load.err;
  EXPECT_FALSE(std::filesystem::exists(Path("b-1.vmsnap")));
}

TEST_F(DirtyCli, SaveParentOverTheControlSocket) {
  pid_t vm = Spawn({"run", Guest("live_checksum"), "--mem", "32M", "--serial", "run.txt", "--control",
                    Path("ctl")});
  ASSERT_TRUE(WaitForLines(Path("run.txt"), "verified", 1, 60s));
  ASSERT_EQ(Run("save --control ctl base.vmsnap").status, 0);
  // Let the guest go through a rewrite phase (it only reads while it checks).
  ASSERT_TRUE(WaitForLines(Path("run.txt"), "verified", CountLines(Path("run.txt"), "verified") + 2, 60s));
  RunResult inc = Run("save --control ctl --parent base.vmsnap inc.vmsnap");
  ASSERT_EQ(inc.status, 0) << inc.err;
  RunResult wrong = Run("save --control ctl --parent base.vmsnap again.vmsnap");
  EXPECT_EQ(wrong.status, 2) << "base.vmsnap is no longer the VM's last snapshot";
  EXPECT_NE(wrong.err.find("is not this VM's last snapshot"), std::string::npos) << wrong.err;
  ASSERT_EQ(Run("save --control ctl --stop end.vmsnap").status, 0);
  EXPECT_EQ(Wait(vm), 0);

  auto base = SnapshotReader::Open(Path("base.vmsnap"));
  auto child = SnapshotReader::Open(Path("inc.vmsnap"));
  ASSERT_TRUE(base.ok() && child.ok());
  auto ref = (*child)->manifest().getParent();
  EXPECT_TRUE(std::equal(ref.getSnapshotId().begin(), ref.getSnapshotId().end(), (*base)->id().begin()));
  // Only the data area (1 MiB at 2 MiB) changes while the guest runs.
  std::set<uint64_t> pages = DefinedPages(**child);
  EXPECT_FALSE(pages.empty());
  for (uint64_t gpa : pages) EXPECT_TRUE(gpa >= kData && gpa < kData + (1 << 20)) << std::hex << gpa;
  EXPECT_LT((*child)->file_size(), (*base)->file_size());
}

// The guest keeps rewriting memory and keeps the sum of it in a register; a
// live snapshot that missed a write fails the guest's first check after load.
TEST_F(DirtyCli, LiveSnapshotKeepsTheGuestsChecksum) {
  pid_t vm = Spawn({"run", Guest("live_checksum"), "--mem", "32M", "--serial", "run.txt", "--control",
                    Path("ctl")});
  ASSERT_TRUE(WaitForLines(Path("run.txt"), "verified", 1, 60s));
  RunResult live = Run("save --control ctl --live live.vmsnap");
  ASSERT_EQ(live.status, 0) << live.err;
  EXPECT_NE(live.out.find("rounds, paused"), std::string::npos) << live.out;
  ASSERT_EQ(Run("save --control ctl --stop end.vmsnap").status, 0);
  EXPECT_EQ(Wait(vm), 0);

  auto r = SnapshotReader::Open(Path("live.vmsnap"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  auto stats = (*r)->manifest().getSave();
  EXPECT_TRUE(stats.getLive());
  EXPECT_GE(stats.getRounds(), 2u);
  EXPECT_GT(stats.getPauseNs(), 0u);

  pid_t loaded = Spawn({"load", "live.vmsnap", "--serial", "load.txt", "--control", Path("ctl2")});
  bool checked = WaitForLines(Path("load.txt"), "verified", 2, 60s);
  std::string out = ReadFile(Path("load.txt"));
  EXPECT_TRUE(checked) << out;
  EXPECT_EQ(out.find("BAD"), std::string::npos) << out;
  (void)Run("save --control ctl2 --stop end2.vmsnap");
  EXPECT_EQ(Wait(loaded), 0) << "the loaded guest failed its checksum";
}

// Sends `request` (a whole line, or bytes one per `trickle` interval) to the
// control socket at `path`; returns the first reply line, or "" on EOF/reset.
std::string RawRequest(const std::string& path, const std::string& request,
                       std::chrono::milliseconds trickle = 0ms) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  for (size_t off = 0; off < request.size();) {
    const size_t n = trickle.count() ? 1 : request.size() - off;
    ssize_t w = ::send(fd, request.data() + off, n, MSG_NOSIGNAL);
    if (w <= 0) break;
    off += size_t(w);
    if (trickle.count()) std::this_thread::sleep_for(trickle);
  }
  std::string reply;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') reply.push_back(c);
  ::close(fd);
  return reply;
}

// No request, however malformed, ends the VM or holds off other clients.
TEST_F(DirtyCli, ControlSocketSurvivesBadAndSlowClients) {
  const std::string ctl = Path("ctl");
  pid_t vm = Spawn({"run", Guest("live_checksum"), "--mem", "32M", "--serial", "run.txt", "--control", ctl});
  ASSERT_TRUE(WaitForSocket(ctl));
  EXPECT_EQ(RawRequest(ctl, "{\"cmd\":\"ping\"}\n"), "{\"ok\":true}");
  for (const std::string bad : {R"({"cmd":"save","path":"x.vmsnap","live":"yes"})",
                                R"({"cmd":"save","path":"x.vmsnap","stop":1})",
                                R"({"cmd":"save","path":"x.vmsnap","progress":null})",
                                R"({"cmd":"save","path":"x.vmsnap","parent":7})",
                                R"({"cmd":"save","path":["x"]})", R"({"cmd":5})", R"([1,2])", "\xff\xfe"}) {
    std::string reply = RawRequest(ctl, bad + "\n");
    EXPECT_NE(reply.find("\"ok\":false"), std::string::npos) << bad << " -> " << reply;
    EXPECT_EQ(::waitpid(vm, nullptr, WNOHANG), 0) << "the VM ended after " << bad;
  }
  EXPECT_FALSE(fs::exists(Path("x.vmsnap")));
  // Over 64 KiB: an error reply, not a reset.
  std::string reply = RawRequest(ctl, std::string(70000, 'a') + "\n");
  EXPECT_NE(reply.find("longer than"), std::string::npos) << reply;

  // A client that trickles a byte a second holds no one off.
  std::thread slow([&] { (void)RawRequest(ctl, "{\"cmd\":\"ping\"}      \n", 1000ms); });
  std::this_thread::sleep_for(300ms);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(RawRequest(ctl, "{\"cmd\":\"ping\"}\n"), "{\"ok\":true}");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
  RunResult save = Run("save --control ctl s.vmsnap");
  EXPECT_EQ(save.status, 0) << save.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4000ms);
  slow.join();

  // A second VM on the same socket is refused; the first still answers.
  RunResult second = Run("run " + Guest("live_checksum") + " --mem 32M --serial /dev/null --control ctl", 30);
  EXPECT_EQ(second.status, 125) << second.err;
  EXPECT_NE(second.err.find("in use"), std::string::npos) << second.err;
  EXPECT_EQ(RawRequest(ctl, "{\"cmd\":\"ping\"}\n"), "{\"ok\":true}");
  // A file that is not a socket at the path is refused and left as it was
  // (the socket is bound under a temporary name first: none is left over).
  std::ofstream(Path("notsock")) << "precious\n";
  RunResult onfile = Run("run " + Guest("live_checksum") + " --mem 32M --serial /dev/null --control notsock", 30);
  EXPECT_EQ(onfile.status, 125) << onfile.err;
  EXPECT_NE(onfile.err.find("cannot bind control socket"), std::string::npos) << onfile.err;
  EXPECT_EQ(ReadFile(Path("notsock")), "precious\n");
  for (const auto& e : std::filesystem::directory_iterator(Path("."))) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
  ASSERT_EQ(Run("save --control ctl --stop end.vmsnap").status, 0);
  EXPECT_EQ(Wait(vm), 0);
}

// A doorbell snapshot that cannot be written is reported; the guest runs on
// to its own exit, as after a failed control-socket save.
TEST_F(DirtyCli, FailedDoorbellSnapshotDoesNotEndTheVm) {
  RunResult r = Run("run " + Guest("incr_rounds") + " --snapshot-on-doorbell 'no/such/dir/s-{n}.vmsnap' --serial out.txt");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("no/such/dir/s-1.vmsnap"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("the VM goes on"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(".tmp-"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace vmsnap::testing
