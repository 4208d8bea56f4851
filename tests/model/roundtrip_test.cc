// SPDX-License-Identifier: MIT
// Save/restore round trips through the kernel models: capture a source model's
// state (stopped, and live with the guest changing CMMA values and HPTEs
// between passes), restore it into a fresh model, and compare. Also through a
// real .vmsnap file written by the capture driver and read back.
#include <capnp/message.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "capture/ppc64/ppc64_capture.h"
#include "capture/s390x/s390_capture.h"
#include "format/reader.h"
#include "tests/model/kernel/ppc64_model.h"
#include "tests/model/kernel/s390_model.h"
#include "restore/ppc64/ppc64_restore.h"
#include "restore/s390x/s390_restore.h"

namespace vmsnap {
namespace {
using kvm::model::PpcModel;
using kvm::model::S390Model;
namespace ks = kvm::s390;
namespace kp = kvm::ppc;

constexpr uint64_t kPages = 3000;  // two slots: [0, 2000) and [2048, 3048)

void SetUpS390(S390Model& vm, int vcpus, bool cmma = true) {
  vm.AddSlot(0, 2000);
  vm.AddSlot(2048, 1000);
  if (cmma) {
    kvm_device_attr a{};
    a.group = ks::kVmMemCtrl;
    a.attr = ks::kVmMemEnableCmma;
    ASSERT_EQ(vm.SetAttr(a), 0);
  }
  for (int i = 0; i < vcpus; ++i) vm.CreateVcpu();
}

std::vector<capture::s390x::GfnRange> Ranges() { return {{0, 2000}, {2048, 1000}}; }

// A guest with varied CMMA values, some keys, and distinct registers per vCPU.
void Populate(S390Model& vm, uint64_t seed) {
  for (uint64_t g = 0; g < kPages; g += 7) {
    uint64_t gfn = g < 2000 ? g : g + 48;
    vm.GuestSetCmma(gfn, static_cast<uint8_t>((g * seed) % 4) | ((g % 3) ? 0x40 : 0));
  }
  for (uint64_t g = 2048; g < 3048; g += 13) vm.GuestSetStorageKey(g, static_cast<uint8_t>((g * 6) & 0xfe));
  for (size_t i = 0; i < vm.vcpu_count(); ++i) {
    auto& s = vm.vcpu(i).state();
    for (int r = 0; r < 16; ++r) {
      s.regs.gprs[r] = seed * 1000 + i * 100 + r;
      s.sregs.acrs[r] = static_cast<uint32_t>(r + i);
      s.sregs.crs[r] = 0xc0de0000 + r;
      s.fpu.fprs[r] = 0x4000000000000000ull + r;
    }
    s.fpu.fpc = 0x00080000;
    s.psw_mask = 0x0705000180000000ull;
    s.psw_addr = 0x10000 + i;
    s.prefix = 0x2000u * static_cast<uint32_t>(i + 1);
    s.mp_state = i == 0 ? ks::kMpOperating : ks::kMpStopped;
    s.todpr = 0x1234;
    s.cpu_timer = 0xfffff000 + i;
    s.clock_comp = 0xabcdef;
    s.pp = 7;
    s.gbea = 0x1;
  }
}

void ExpectSameS390(const S390Model& a, const S390Model& b) {
  EXPECT_EQ(a.uses_skeys(), b.uses_skeys());
  for (uint64_t g = 0; g < 3048; ++g) {
    ASSERT_EQ(a.cmma(g), b.cmma(g)) << "cmma of gfn " << g;
    ASSERT_EQ(a.skey(g), b.skey(g)) << "storage key of gfn " << g;
  }
  EXPECT_EQ(a.tod_low(), b.tod_low());
  ASSERT_EQ(a.vcpu_count(), b.vcpu_count());
  for (size_t i = 0; i < a.vcpu_count(); ++i) {
    EXPECT_TRUE(const_cast<S390Model&>(a).vcpu(i).state() == const_cast<S390Model&>(b).vcpu(i).state())
        << "vCPU " << i;
  }
}

std::vector<ks::Vcpu*> Vcpus(S390Model& vm) {
  std::vector<ks::Vcpu*> v;
  for (size_t i = 0; i < vm.vcpu_count(); ++i) v.push_back(&vm.vcpu(i));
  return v;
}

void RestoreS390(schema::Manifest::Reader m, S390Model& dst) {
  // The VMM creates the VM, replays CMMA enablement, then creates the vCPUs.
  dst.AddSlot(0, 2000);
  dst.AddSlot(2048, 1000);
  restore::s390x::Options opts;
  opts.cmma_block = 700;  // several blocks per run
  opts.skeys_block = 300;
  restore::s390x::S390Restorer restorer(dst, opts);
  ASSERT_TRUE(restorer.RestoreVmConfig(m).ok());
  for (unsigned i = 0; i < m.getVcpus().size(); ++i) dst.CreateVcpu();
  restorer.set_vcpus(Vcpus(dst));
  Status s = restorer.RestoreState(m);
  ASSERT_TRUE(s.ok()) << s.message();
}

class S390RoundTrip : public ::testing::TestWithParam<capture::s390x::CmmaMode> {};

TEST_P(S390RoundTrip, StoppedVmRestoresEqual) {
  S390Model src;
  SetUpS390(src, 2);
  Populate(src, 3);
  uint64_t tod = 0x1122334455667788ull;
  kvm_device_attr a{};
  a.group = ks::kVmTod;
  a.attr = ks::kVmTodLow;
  a.addr = reinterpret_cast<uintptr_t>(&tod);
  ASSERT_EQ(src.SetAttr(a), 0);

  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  capture::s390x::Options opts;
  opts.memory = Ranges();
  opts.cmma_mode = GetParam();
  opts.cmma_buffer = 1024;
  opts.skeys_block = 512;
  Status s = capture::s390x::CaptureManifest(src, Vcpus(src), opts, m);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_FALSE(src.migration_mode());  // switched off again
  auto vm = m.asReader().getVm().getS390x();
  EXPECT_TRUE(vm.getCmmaEnabled());
  EXPECT_TRUE(vm.getSkeysUsed());
  EXPECT_GE(vm.getCmma().size(), 2u);  // one run per slot at least: the hole splits them

  S390Model dst;
  RestoreS390(m.asReader(), dst);
  ExpectSameS390(src, dst);
}

INSTANTIATE_TEST_SUITE_P(Modes, S390RoundTrip,
                         ::testing::Values(capture::s390x::CmmaMode::kPeek,
                                           capture::s390x::CmmaMode::kMigration));

TEST(S390RoundTripLive, GuestChangesBetweenPassesAreCaptured) {
  S390Model src;
  SetUpS390(src, 1);
  Populate(src, 1);
  capture::s390x::CmmaTracker live(src, 256);
  ASSERT_TRUE(live.Start().ok());
  ASSERT_TRUE(live.Pass(/*max_calls=*/3).ok());  // a bounded round while the guest runs
  for (uint64_t g = 0; g < 2000; g += 5) src.GuestSetCmma(g, 0x02);
  ASSERT_TRUE(live.Pass().ok());
  for (uint64_t g = 2048; g < 3048; g += 3) src.GuestSetCmma(g, 0x43);
  src.GuestSetCmma(1999, 0x01);
  // Guest stopped: the final pass happens inside the capture.
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  capture::s390x::Options opts;
  opts.memory = Ranges();
  Status s = capture::s390x::CaptureManifest(src, Vcpus(src), opts, m, &live);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_FALSE(src.migration_mode());
  EXPECT_GT(live.calls(), 4u);
  S390Model dst;
  RestoreS390(m.asReader(), dst);
  ExpectSameS390(src, dst);
}

TEST(S390RoundTripLive, KeylessGuestAndDisabledCmma) {
  S390Model src;
  SetUpS390(src, 1, /*cmma=*/false);
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  capture::s390x::Options opts;
  opts.memory = Ranges();
  ASSERT_TRUE(capture::s390x::CaptureManifest(src, Vcpus(src), opts, m).ok());
  auto vm = m.asReader().getVm().getS390x();
  EXPECT_FALSE(vm.getCmmaEnabled());
  EXPECT_FALSE(vm.getSkeysUsed());  // GET_SKEYS said NONE
  S390Model dst;
  RestoreS390(m.asReader(), dst);
  EXPECT_FALSE(dst.use_cmma());
  EXPECT_FALSE(dst.uses_skeys());  // restore did not switch keys on
}

TEST(S390RoundTripFaults, InterruptedCallsAreRetriedAndFailuresNamed) {
  S390Model src;
  SetUpS390(src, 1);
  Populate(src, 2);
  src.faults().ArmErrno("KVM_S390_GET_CMMA_BITS", EINTR, 2);
  src.faults().ArmErrno("KVM_S390_GET_SKEYS", EINTR);
  src.faults().ArmErrno("KVM_GET_SREGS", EINTR);
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  capture::s390x::Options opts;
  opts.memory = Ranges();
  opts.cmma_buffer = 500;
  Status s = capture::s390x::CaptureManifest(src, Vcpus(src), opts, m);
  ASSERT_TRUE(s.ok()) << s.message();
  S390Model dst;
  RestoreS390(m.asReader(), dst);
  ExpectSameS390(src, dst);

  src.faults().ArmErrno("vmalloc", ENOMEM);
  capnp::MallocMessageBuilder msg2;
  s = capture::s390x::CaptureManifest(src, Vcpus(src), opts, msg2.initRoot<schema::Manifest>());
  EXPECT_EQ(s.code(), Code::kKvm);
  EXPECT_NE(s.message().find("KVM_S390_GET_CMMA_BITS"), std::string::npos) << s.message();
  EXPECT_FALSE(src.migration_mode());  // switched off even after the failure
}

// ---- ppc64 ----

constexpr uint64_t kV = kp::kHpteVValid;

void PopulatePpc(PpcModel& vm, uint64_t seed) {
  for (uint64_t i = 0; i < vm.npte(); i += 37) {
    uint64_t v = kV | ((seed * i) << 7 & kp::kHpteVAvpn) | ((i % 5 == 0) ? kp::kHpteVBolted : 0);
    vm.GuestEnter(i, v, (i << 12) | 0x190 | (i % 4));
  }
  for (size_t c = 0; c < vm.vcpu_count(); ++c) {
    auto& s = vm.vcpu(c).state();
    s.regs.pc = 0xc000000000001000ull + c;
    s.regs.msr = 0x8000000000001033ull;
    s.regs.sprg3 = 0x77;
    for (int r = 0; r < 32; ++r) s.regs.gpr[r] = seed * 100 + r + c;
    s.sdr1 = 0;
    s.slb = {{0x0800000000000000ull | kp::kSlbEsidValid, 0x400}, {0xc000000008000000ull | 1, 0x500}};
    uint64_t dar = 0xdead, lpcr = 0x0040000000000000ull;
    s.one_regs[kp::kSprs[3].id] = std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&dar),
                                                       reinterpret_cast<uint8_t*>(&dar) + 8);
    s.one_regs[kp::kSprs[38].id] = std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&lpcr),
                                                        reinterpret_cast<uint8_t*>(&lpcr) + 8);
    uint32_t dsisr = 0x42000000;
    s.one_regs[kp::kSprs[4].id] = std::vector<uint8_t>(reinterpret_cast<uint8_t*>(&dsisr),
                                                       reinterpret_cast<uint8_t*>(&dsisr) + 4);
    std::vector<uint8_t> vsr(16);
    for (int b = 0; b < 16; ++b) vsr[b] = static_cast<uint8_t>(b * 3 + c);
    s.one_regs[kp::kRegVsr0 + 5] = vsr;
  }
}

std::vector<kp::Vcpu*> Vcpus(PpcModel& vm) {
  std::vector<kp::Vcpu*> v;
  for (size_t i = 0; i < vm.vcpu_count(); ++i) v.push_back(&vm.vcpu(i));
  return v;
}

void RestorePpc(schema::Manifest::Reader m, PpcModel& dst) {
  restore::ppc64::Options opts;
  opts.write_buffer = 1000;  // many writes
  restore::ppc64::PpcRestorer restorer(dst, opts);
  ASSERT_TRUE(restorer.RestoreVmConfig(m).ok());
  for (unsigned i = 0; i < m.getVcpus().size(); ++i) dst.CreateVcpu();
  restorer.set_vcpus(Vcpus(dst));
  Status s = restorer.RestoreState(m);
  ASSERT_TRUE(s.ok()) << s.message();
}

void ExpectSamePpc(PpcModel& a, PpcModel& b) {
  EXPECT_EQ(a.order(), b.order());
  EXPECT_EQ(a.GuestView(), b.GuestView());
  ASSERT_EQ(a.vcpu_count(), b.vcpu_count());
  for (size_t i = 0; i < a.vcpu_count(); ++i) EXPECT_TRUE(a.vcpu(i).state() == b.vcpu(i).state()) << "vCPU " << i;
}

TEST(PpcRoundTrip, StoppedVmRestoresEqual) {
  PpcModel src(19);
  src.CreateVcpu();
  src.CreateVcpu();
  PopulatePpc(src, 3);
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  capture::ppc64::Options opts;
  opts.read_buffer = 4096;  // several reads per pass
  Status s = capture::ppc64::CaptureManifest(src, Vcpus(src), opts, m);
  ASSERT_TRUE(s.ok()) << s.message();
  auto htab = m.asReader().getVm().getPpc64().getHtab();
  EXPECT_EQ(htab.getShift(), 19u);  // learnt from the first pass
  EXPECT_EQ(htab.getEntries().size(), src.GuestView().size());
  PpcModel dst(18);  // a different size: restore reallocates
  RestorePpc(m.asReader(), dst);
  ExpectSamePpc(src, dst);
}

TEST(PpcRoundTrip, LiveRoundsFollowGuestChanges) {
  PpcModel src(18);
  src.CreateVcpu();
  PopulatePpc(src, 1);
  capture::ppc64::Options opts;
  opts.read_buffer = 2048;
  auto reader = capture::ppc64::HtabReader::Open(src, opts);
  ASSERT_TRUE(reader.ok());
  ASSERT_TRUE((*reader)->Pass(/*max_reads=*/2).ok());  // part of the first pass, guest running
  for (uint64_t i = 0; i < src.npte(); i += 370) src.GuestRemove(i);
  for (uint64_t i = 5; i < src.npte(); i += 1001) src.GuestEnter(i, kV | 0x4480, 0x9000 | 0x2);
  ASSERT_TRUE((*reader)->Pass().ok());
  src.HardwareSetRc(37, kp::kHpteRR | kp::kHpteRC);
  src.GuestEnter(16383, kV | kp::kHpteVBolted, 0x1234000);
  src.GuestRemove(74);
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  Status s = capture::ppc64::CaptureManifest(src, Vcpus(src), opts, m, reader->get());
  ASSERT_TRUE(s.ok()) << s.message();
  PpcModel dst(18);
  RestorePpc(m.asReader(), dst);
  ExpectSamePpc(src, dst);
}

TEST(PpcRoundTrip, BoltedOnlyKeepsBoltedEntries) {
  PpcModel src(18);
  PopulatePpc(src, 2);
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  capture::ppc64::Options opts;
  opts.bolted_only = true;
  ASSERT_TRUE(capture::ppc64::CaptureManifest(src, {}, opts, m).ok());
  auto htab = m.asReader().getVm().getPpc64().getHtab();
  EXPECT_TRUE(htab.getBoltedOnly());
  PpcModel dst(18);
  RestorePpc(m.asReader(), dst);
  auto view = dst.GuestView();
  size_t bolted = 0;
  for (const auto& [i, vr] : src.GuestView()) {
    if (vr.first & kp::kHpteVBolted) {
      ++bolted;
      EXPECT_EQ(view.at(i), vr);
    }
  }
  EXPECT_EQ(view.size(), bolted);
  EXPECT_GT(bolted, 0u);
}

TEST(PpcRoundTrip, ShortReadsInterruptsAndShortWritesAreHandled) {
  PpcModel src(18);
  src.CreateVcpu();
  PopulatePpc(src, 5);
  src.faults().ArmShort("read", 200);
  src.faults().ArmErrno("read", EINTR, 1);
  src.faults().ArmErrno("KVM_GET_ONE_REG", EINTR, 10);
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  ASSERT_TRUE(capture::ppc64::CaptureManifest(src, Vcpus(src), {}, m).ok());
  PpcModel dst(18);
  dst.faults().ArmShort("write", 500);
  dst.faults().ArmErrno("write", EINTR, 2);
  RestorePpc(m.asReader(), dst);
  ExpectSamePpc(src, dst);
  // Restoring while vCPUs run is refused with the kernel's EBUSY, named.
  PpcModel busy(18);
  busy.CreateVcpu();
  busy.set_vcpus_running(true);
  Status s = restore::ppc64::RestoreHtab(busy, m.asReader().getVm().getPpc64().getHtab());
  EXPECT_EQ(s.code(), Code::kKvm);
}

TEST(PpcRoundTrip, WrongArchitectureIsRefused) {
  S390Model s390;
  SetUpS390(s390, 1);
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  capture::s390x::Options opts;
  opts.memory = Ranges();
  ASSERT_TRUE(capture::s390x::CaptureManifest(s390, Vcpus(s390), opts, m).ok());
  PpcModel ppc(18);
  ppc.CreateVcpu();
  Status s = restore::ppc64::RestoreManifest(ppc, Vcpus(ppc), m.asReader());
  EXPECT_EQ(s.code(), Code::kWrongArch);
}

// ---- through a .vmsnap file ----

struct TempDir {
  TempDir() {
    char t[] = "/tmp/vmsnap-model-XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { (void)std::system(("rm -rf '" + path + "'").c_str()); }
  std::string path;
};

TEST(SnapshotFile, S390AndPpcSnapshotsWriteAndReadBack) {
  TempDir dir;
  std::vector<uint8_t> ram(64 * 4096, 0);
  for (size_t i = 0; i < ram.size(); i += 4096 * 3) ram[i] = static_cast<uint8_t>(i / 4096 + 1);
  kvm::GuestRegion region;
  region.gpa = 0;
  region.size = ram.size();
  region.host = ram.data();
  region.name = "ram";

  S390Model src;
  SetUpS390(src, 2);
  Populate(src, 4);
  capture::s390x::Options opts;
  opts.memory = Ranges();
  capture::s390x::S390Capturer cap(src, Vcpus(src), opts);
  capture::CaptureOptions copts;
  copts.writer.threads = 1;
  auto written = capture::WriteSnapshot(dir.path + "/s390.vmsnap", cap, {&region, 1}, copts);
  ASSERT_TRUE(written.ok()) << written.status().message();
  auto reader = SnapshotReader::Open(dir.path + "/s390.vmsnap");
  ASSERT_TRUE(reader.ok()) << reader.status().message();
  EXPECT_EQ((*reader)->manifest().getArch(), schema::Arch::S390X);
  ASSERT_TRUE((*reader)->VerifyAll().ok());
  S390Model dst;
  RestoreS390((*reader)->manifest(), dst);
  ExpectSameS390(src, dst);

  PpcModel psrc(18);
  psrc.CreateVcpu();
  PopulatePpc(psrc, 6);
  capture::ppc64::PpcCapturer pcap(psrc, Vcpus(psrc), {}, 4096);
  written = capture::WriteSnapshot(dir.path + "/ppc.vmsnap", pcap, {&region, 1}, copts);
  ASSERT_TRUE(written.ok()) << written.status().message();
  auto preader = SnapshotReader::Open(dir.path + "/ppc.vmsnap");
  ASSERT_TRUE(preader.ok()) << preader.status().message();
  EXPECT_EQ((*preader)->manifest().getArch(), schema::Arch::PPC64);
  PpcModel pdst(18);
  RestorePpc((*preader)->manifest(), pdst);
  ExpectSamePpc(psrc, pdst);
}

}  // namespace
}  // namespace vmsnap
