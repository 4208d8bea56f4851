// SPDX-License-Identifier: MIT
// x86-64 on real KVM: each test guest run uninterrupted versus restored from
// its doorbell snapshot, capture -> restore -> capture round trips, saves
// through the control socket, and the failures that must exit 125.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "format/reader.h"
#include "format/writer.h"
#include "tests/format/test_util.h"
#include "vmm/control.h"
#include "vmm/vmm.h"

namespace vmsnap {
namespace {

namespace fs = std::filesystem;

struct Proc {
  int status = -1;  // exit status, or -1 when killed or not exited
  std::string out;
  std::string err;
};

// In a forked child: becomes `vmsnap ARGS`; exits 127 if that fails.
[[noreturn]] void ExecVmsnap(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::string bin = VMSNAP_BIN;
  argv.push_back(bin.data());
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  execv(bin.c_str(), argv.data());
  _exit(127);
}

// Runs vmsnap with `args`; `env` entries "K=V" are added. Kills it after
// `timeout_s` seconds.
Proc Vmsnap(const std::vector<std::string>& args, const std::vector<std::string>& env = {},
            int timeout_s = 60) {
  int out[2], err[2];
  EXPECT_EQ(pipe2(out, O_CLOEXEC), 0);
  EXPECT_EQ(pipe2(err, O_CLOEXEC), 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    ExecVmsnap(args);
  }
  close(out[1]);
  close(err[1]);
  Proc p;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    int ms = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                  deadline - std::chrono::steady_clock::now())
                                  .count());
    if (ms <= 0) {
      kill(pid, SIGKILL);
      break;
    }
    if (poll(fds, 2, ms) <= 0) continue;
    char buf[4096];
    for (int k = 0; k < 2; ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP))) continue;
      ssize_t n = read(fds[k].fd, buf, sizeof buf);
      if (n <= 0) {
        (k == 0 ? out_open : err_open) = false;
        fds[k].fd = -1;
      } else {
        (k == 0 ? p.out : p.err).append(buf, static_cast<size_t>(n));
      }
    }
  }
  close(out[0]);
  close(err[0]);
  int ws = 0;
  waitpid(pid, &ws, 0);
  if (WIFEXITED(ws)) p.status = WEXITSTATUS(ws);
  return p;
}

std::string Guest(const std::string& name) { return std::string(VMSNAP_GUEST_DIR) + "/" + name; }

class KvmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is not available: skipping real-KVM test";
    // A parameterised test's name has a '/': one directory, not two.
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '-');
    dir_ = fs::temp_directory_path() / ("vmsnap-x86-" + std::to_string(getpid()) + "-" + name);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

// What a guest printed after its "DOORBELL" line.
std::string AfterDoorbell(const std::string& out) {
  auto pos = out.find("DOORBELL\n");
  if (pos == std::string::npos) return "<no DOORBELL line in: " + out + ">";
  return out.substr(pos + 9);
}

struct GuestCase {
  const char* name;
  const char* image;
  std::vector<std::string> extra;
  int exit_status;
};

class GuestRoundTrip : public KvmTest, public ::testing::WithParamInterface<GuestCase> {};

// The guest restored from its doorbell snapshot prints exactly what the
// uninterrupted run printed after the doorbell, and exits the same way; and
// a capture -> restore -> capture round trip shows no difference outside the
// documented volatile fields.
TEST_P(GuestRoundTrip, LoadContinuesLikeTheUninterruptedRun) {
  const GuestCase& c = GetParam();
  std::vector<std::string> run = {"run", Guest(c.image)};
  run.insert(run.end(), c.extra.begin(), c.extra.end());
  Proc plain = Vmsnap(run);
  ASSERT_EQ(plain.status, c.exit_status) << plain.out << plain.err;

  std::vector<std::string> snap_run = run;
  snap_run.push_back("--snapshot-on-doorbell");
  snap_run.push_back(Path("snap-{n}.vmsnap"));
  Proc with_snap = Vmsnap(snap_run);
  ASSERT_EQ(with_snap.status, c.exit_status) << with_snap.err;
  EXPECT_EQ(with_snap.out, plain.out);
  ASSERT_TRUE(fs::exists(Path("snap-1.vmsnap"))) << "doorbell snapshot was not numbered from 1";
  EXPECT_EQ(fs::status(Path("snap-1.vmsnap")).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);

  Proc loaded = Vmsnap({"load", Path("snap-1.vmsnap")});
  EXPECT_EQ(loaded.status, c.exit_status) << loaded.err;
  EXPECT_EQ(loaded.out, AfterDoorbell(plain.out));
  EXPECT_EQ(loaded.err, "");

  // Round trip: restore into a fresh VM (not run), capture again, compare.
  {
    vmm::VmmOptions o;
    o.serial = Path("serial.txt");
    auto machine = vmm::Vmm::Restore(Path("snap-1.vmsnap"), o);
    ASSERT_TRUE(machine.ok()) << machine.status().message();
    auto saved = (*machine)->Save(Path("again.vmsnap"));
    ASSERT_TRUE(saved.ok()) << saved.status().message();
  }
  Proc diff = Vmsnap({"diff", "--json", "--ignore-volatile", Path("snap-1.vmsnap"), Path("again.vmsnap")});
  ASSERT_NE(diff.status, 2) << diff.err;
  nlohmann::json j = nlohmann::json::parse(diff.out, nullptr, false);
  ASSERT_TRUE(j.is_object()) << diff.out;
  EXPECT_EQ(j["memory"]["differing_pages"], 0) << diff.out;
  for (const auto& d : j["differences"]) {
    // The PIT keeps counting in the kernel while the restored VM sits
    // unrun; a tick between restore and capture latches IRQ0 in the PIC's
    // IRR (docs/state-coverage.md lists this among the fields that move).
    std::string path = d["path"];
    bool pit_tick = path == "vm.pic_master.irr" || path == "vm.pic_master.last_irr";
    EXPECT_TRUE(pit_tick) << "unexpected difference: " << d.dump();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Guests, GuestRoundTrip,
    ::testing::Values(GuestCase{"regs_flat", "regs.bin", {}, 42},
                      GuestCase{"timer_2vcpu", "timer.elf", {"--vcpus", "2"}, 43},
                      GuestCase{"pit", "pit.elf", {}, 44},
                      GuestCase{"smp_4vcpu", "smp.elf", {"--vcpus", "4"}, 45}),
    [](const ::testing::TestParamInfo<GuestCase>& p) { return std::string(p.param.name); });

// The snapshot itself holds what the guests set: DRs, guest-written MSRs, and
// a vCPU halted with its LAPIC timer armed.
TEST_F(KvmTest, SnapshotHoldsGuestState) {
  ASSERT_EQ(Vmsnap({"run", Guest("regs.elf"), "--serial", Path("s1"), "--snapshot-on-doorbell",
                    Path("regs.vmsnap")}).status, 42);
  auto r = SnapshotReader::Open(Path("regs.vmsnap"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  auto v = (*r)->manifest().getVcpus()[0].getX8664();
  EXPECT_EQ(v.getDebugregs().getDr0(), 0xdead0000u);
  EXPECT_EQ(v.getDebugregs().getDr3(), 0xdead3000u);
  EXPECT_EQ(v.getDebugregs().getDr7() & 0xff, 0x55u);
  EXPECT_EQ(v.getRegs().getR12(), 0xccccccccccccccccull);
  EXPECT_TRUE(v.getSregs().getEfer() & 0x800) << "EFER.NXE";
  bool star = false, lstar = false;
  for (auto m : v.getMsrs()) {
    if (m.getIndex() == 0xc0000081) star = m.getValue() == 0x0023001000000000ull;
    if (m.getIndex() == 0xc0000082) lstar = m.getValue() == 0xffffffff81234560ull;
  }
  EXPECT_TRUE(star);
  EXPECT_TRUE(lstar);
  EXPECT_EQ(v.getXsave().size(), 4096u);

  ASSERT_EQ(Vmsnap({"run", Guest("timer.elf"), "--vcpus", "2", "--serial", Path("s2"), "--snapshot-on-doorbell",
                    Path("timer.vmsnap")}).status, 43);
  auto t = SnapshotReader::Open(Path("timer.vmsnap"));
  ASSERT_TRUE(t.ok()) << t.status().message();
  auto v1 = (*t)->manifest().getVcpus()[1].getX8664();
  EXPECT_EQ(v1.getMpState(), static_cast<uint32_t>(KVM_MP_STATE_HALTED));
  uint32_t lvtt = 0, tmict = 0;
  std::memcpy(&lvtt, v1.getLapic().begin() + 0x320, 4);
  std::memcpy(&tmict, v1.getLapic().begin() + 0x380, 4);
  EXPECT_EQ(lvtt & 0x100ff, 0x40u) << "LAPIC timer vector 0x40, unmasked";
  EXPECT_EQ(tmict, 300000000u);
}

// TSC_AUX cannot be written by guests on this host (no RDTSCP in their
// CPUID); set it from the host and check it survives a round trip.
TEST_F(KvmTest, HostSetTscAuxSurvivesRoundTrip) {
  vmm::VmmOptions o;
  o.serial = Path("serial.txt");
  vmm::BootConfig b;
  b.image = Guest("regs.elf");
  b.vcpus = 2;
  {
    auto machine = vmm::Vmm::Boot(b, o);
    ASSERT_TRUE(machine.ok()) << machine.status().message();
    kvm_msr_entry e{};
    e.index = 0xc0000103;
    e.data = 0xabcd;
    std::vector<kvm_msr_entry> one{e};
    Status set = (*machine)->vcpu_ops(1).SetMsrsAll(one);
    ASSERT_TRUE(set.ok()) << set.message();
    ASSERT_TRUE((*machine)->Save(Path("a.vmsnap")).ok());
  }
  {
    auto machine = vmm::Vmm::Restore(Path("a.vmsnap"), o);
    ASSERT_TRUE(machine.ok()) << machine.status().message();
    ASSERT_TRUE((*machine)->Save(Path("b.vmsnap")).ok());
  }
  auto r = SnapshotReader::Open(Path("b.vmsnap"));
  ASSERT_TRUE(r.ok());
  bool found = false;
  for (auto m : (*r)->manifest().getVcpus()[1].getX8664().getMsrs()) {
    if (m.getIndex() == 0xc0000103) found = m.getValue() == 0xabcd;
  }
  EXPECT_TRUE(found) << "TSC_AUX of vCPU 1 not restored";
  Proc diff = Vmsnap({"diff", "--ignore-volatile", Path("a.vmsnap"), Path("b.vmsnap")});
  EXPECT_EQ(diff.status, 0) << diff.out << diff.err;
}

// Starts `vmsnap run` in the background; returns its pid.
pid_t Spawn(const std::vector<std::string>& args, const std::string& out_file) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    ExecVmsnap(args);
  }
  return pid;
}

bool WaitForSocket(const std::string& path) {
  for (int i = 0; i < 500; ++i) {
    struct stat st {};
    if (stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

int WaitExit(pid_t pid, int timeout_s = 60) {
  for (int i = 0; i < timeout_s * 100; ++i) {
    int ws = 0;
    if (waitpid(pid, &ws, WNOHANG) == pid) return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -2;
}

std::string ReadFile(const std::string& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A snapshot saved through the control socket while the guest runs loads and
// continues to the same end; --stop ends the VM after saving.
TEST_F(KvmTest, ControlSocketSaveWhileRunning) {
  std::string sock = Path("ctl.sock");
  pid_t pid = Spawn({"run", Guest("spin.elf"), "--control", sock, "--serial", Path("run.out")}, Path("run.log"));
  ASSERT_TRUE(WaitForSocket(sock));
  struct stat st {};
  ASSERT_EQ(stat(sock.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  Proc save = Vmsnap({"save", "--control", sock, Path("live.vmsnap")});
  EXPECT_EQ(save.status, 0) << save.err;
  EXPECT_NE(save.out.find(Path("live.vmsnap")), std::string::npos) << save.out;
  EXPECT_EQ(WaitExit(pid), 46) << ReadFile(Path("run.log"));
  std::string full = ReadFile(Path("run.out"));
  ASSERT_NE(full.find("spin: done"), std::string::npos) << full;

  Proc loaded = Vmsnap({"load", Path("live.vmsnap")});
  EXPECT_EQ(loaded.status, 46) << loaded.err;
  ASSERT_FALSE(loaded.out.empty());
  EXPECT_LT(loaded.out.size(), full.size()) << "the load should resume mid-run";
  EXPECT_EQ(full.substr(full.size() - loaded.out.size()), loaded.out) << "load output is not the run's tail";

  // --stop: the running VM ends (status 0) right after the save.
  pid = Spawn({"run", Guest("spin.elf"), "--control", sock, "--serial", Path("run2.out")}, Path("run2.log"));
  ASSERT_TRUE(WaitForSocket(sock));
  Proc stop = Vmsnap({"save", "--control", sock, Path("stopped.vmsnap"), "--stop"});
  EXPECT_EQ(stop.status, 0) << stop.err;
  EXPECT_EQ(WaitExit(pid), 0) << ReadFile(Path("run2.log"));
  EXPECT_EQ(ReadFile(Path("run2.out")).find("spin: done"), std::string::npos);
  Proc resumed = Vmsnap({"load", Path("stopped.vmsnap")});
  EXPECT_EQ(resumed.status, 46) << resumed.err;
  EXPECT_NE(resumed.out.find("spin: done"), std::string::npos);

  // A save to a socket nobody listens on fails with status 2.
  Proc nobody = Vmsnap({"save", "--control", Path("none.sock"), Path("x.vmsnap")});
  EXPECT_EQ(nobody.status, 2);
  EXPECT_NE(nobody.err.find("cannot connect"), std::string::npos) << nobody.err;
}

// One line on stderr, no crash output.
void ExpectOneLineError(const Proc& p, const std::string& needle) {
  EXPECT_EQ(p.status, 125) << p.err;
  EXPECT_NE(p.err.find(needle), std::string::npos) << p.err;
  EXPECT_EQ(std::count(p.err.begin(), p.err.end(), '\n'), 1) << p.err;
}

TEST_F(KvmTest, BadInputExits125) {
  // Missing guest image.
  ExpectOneLineError(Vmsnap({"run", Path("no-such-guest")}), "cannot open guest image");
  // Image too large for --mem: 3 MiB flat image, 2 MiB of RAM.
  {
    std::ofstream big(Path("big.bin"), std::ios::binary);
    std::string mib(1 << 20, '\x90');
    for (int i = 0; i < 3; ++i) big << mib;
  }
  ExpectOneLineError(Vmsnap({"run", Path("big.bin"), "--mem", "2M"}), "does not fit");
  // No KVM device (simulated: VMSNAP_KVM_DEVICE, documented for testing).
  ExpectOneLineError(Vmsnap({"run", Guest("regs.elf")}, {"VMSNAP_KVM_DEVICE=" + Path("no-kvm")}),
                     "cannot open KVM device");

  // A valid snapshot to damage.
  ASSERT_EQ(Vmsnap({"run", Guest("regs.elf"), "--serial", Path("s"), "--snapshot-on-doorbell",
                    Path("good.vmsnap")}).status, 42);
  ExpectOneLineError(Vmsnap({"load", Path("good.vmsnap")}, {"VMSNAP_KVM_DEVICE=" + Path("no-kvm")}),
                     "cannot open KVM device");
  // Corrupt: flip bytes in the middle of the file (memory chunks).
  {
    std::string bytes = ReadFile(Path("good.vmsnap"));
    for (size_t i = 0; i < 64; ++i) bytes[bytes.size() / 2 + i] ^= 0x5a;
    std::ofstream(Path("corrupt.vmsnap"), std::ios::binary) << bytes;
  }
  Proc corrupt = Vmsnap({"load", Path("corrupt.vmsnap")});
  EXPECT_EQ(corrupt.status, 125);
  EXPECT_EQ(std::count(corrupt.err.begin(), corrupt.err.end(), '\n'), 1) << corrupt.err;
  // Truncated.
  {
    std::string bytes = ReadFile(Path("good.vmsnap"));
    std::ofstream(Path("short.vmsnap"), std::ios::binary) << bytes.substr(0, bytes.size() - 100);
  }
  Proc trunc = Vmsnap({"load", Path("short.vmsnap")});
  EXPECT_EQ(trunc.status, 125);
  EXPECT_EQ(std::count(trunc.err.begin(), trunc.err.end(), '\n'), 1) << trunc.err;
  // Not a snapshot at all.
  ExpectOneLineError(Vmsnap({"load", Guest("regs.elf")}), "");
  // State this host's KVM refuses after the memory is in (XCR0 with a bit no
  // CPU defines: KVM_SET_XCRS says EINVAL): one line and 125, also while a
  // lazy loader's threads are still filling memory the failed VM frees.
  // 256 MiB of which two pages in three hold data, so the background fill
  // is still running when the restore fails.
  ASSERT_EQ(Vmsnap({"run", Guest("allpages.elf"), "--mem", "256M", "--serial", Path("s2"),
                    "--snapshot-on-doorbell", Path("full.vmsnap")}).status, 0);
  testing::WriteFileBytes(Path("bad-xcr0.vmsnap"),
                          testing::RewriteManifest(testing::ReadFileBytes(Path("full.vmsnap")),
                                                   [](schema::Manifest::Builder m) {
                                                     auto x = m.getVcpus()[0].getX8664().getXcrs();
                                                     ASSERT_GT(x.size(), 0u);
                                                     x[0].setValue(x[0].getValue() | (1ull << 62));
                                                   }));
  // A raw snapshot is mapped copy-on-write, so its pages reach the guest
  // unchecked: the file is verified before the first mapping, and again
  // whenever it changed since. A damaged byte in memory is refused.
  {
    const std::vector<std::string> cache = {"XDG_CACHE_HOME=" + Path("cache")};
    ASSERT_EQ(Vmsnap({"run", Guest("allpages.elf"), "--mem", "64M", "--serial", Path("s3"), "--compress", "none",
                      "--snapshot-on-doorbell", Path("raw.vmsnap")}).status, 0);
    Proc ok = Vmsnap({"load", Path("raw.vmsnap"), "--serial", Path("s4")}, cache);
    EXPECT_EQ(ok.status, 0) << ok.err;
    EXPECT_EQ(ReadFile(Path("s4")), "allpages: ok\n");
    // Changed in place after it was verified once (its ctime moves).
    std::string bytes = ReadFile(Path("raw.vmsnap"));
    const size_t at = bytes.size() / 2;
    {
      std::fstream f(Path("raw.vmsnap"), std::ios::in | std::ios::out | std::ios::binary);
      f.seekp(long(at));
      f.put(char(bytes[at] ^ 0x5a));
    }
    Proc bad = Vmsnap({"load", Path("raw.vmsnap"), "--serial", Path("s5")}, cache);
    ExpectOneLineError(bad, "checksum");
    EXPECT_EQ(ReadFile(Path("s5")), "");
  }
  for (const char* mode : {"lazy", "eager"}) {
    Proc p = Vmsnap({"load", Path("bad-xcr0.vmsnap"), "--memory", mode});
    ExpectOneLineError(p, "KVM_SET_XCRS");
    EXPECT_EQ(p.err.find("Segmentation"), std::string::npos) << mode << ": " << p.err;
  }
  // A non-x86 snapshot.
  {
    auto w = SnapshotWriter::Create(Path("s390.vmsnap"), WriterOptions{});
    ASSERT_TRUE(w.ok()) << w.status().message();
    auto m = (*w)->manifest();
    m.setArch(schema::Arch::S390X);
    auto r = m.initMemory();
    r.setPageSize(4096);
    auto reg = r.initRegions(1)[0];
    reg.setSize(1 << 20);
    std::vector<uint8_t> mem(1 << 20, 0);
    mem[4096] = 1;
    ASSERT_TRUE((*w)->AddMemory(0, mem.data(), mem.size()).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  ExpectOneLineError(Vmsnap({"load", Path("s390.vmsnap")}), "wrong architecture");
  // An arm64 snapshot (the golden one) names its architecture.
  ExpectOneLineError(Vmsnap({"load", std::string(VMSNAP_GOLDEN_DIR) + "/aarch64.vmsnap"}),
                     "is for aarch64; this VMM restores x86_64 (wrong architecture)");
}

}  // namespace
}  // namespace vmsnap
