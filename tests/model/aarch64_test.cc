// SPDX-License-Identifier: MIT
// The arm64 kernel model's documented behaviours, capture -> restore ->
// capture round trips through it, and one test per restore-order rule that
// breaks the rule and checks the failure (or the state lost) a user would see.
#include <capnp/message.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "capture/aarch64/arm64_capture.h"
#include "format/chain.h"
#include "format/reader.h"
#include "restore/aarch64/arm64_restore.h"
#include "restore/restore.h"
#include "tests/model/kernel/aarch64_model.h"

namespace vmsnap {
namespace {
using kvm::model::Arm64Model;
using kvm::model::Arm64ModelGic;
using kvm::model::Arm64ModelIts;
using kvm::model::Arm64ModelVcpu;
namespace ka = kvm::arm64;
namespace ra = restore::aarch64;

constexpr uint64_t kTable = 0x80000;       // the ITS device table in guest memory
constexpr uint64_t kCollections = 0xa0000; // its collection table
constexpr uint64_t kItt1 = 0x88000, kItt2 = 0x88100;  // two devices' ITTs
constexpr uint64_t kValid = 1ull << 63;

ka::VcpuInit Init(bool sve) {
  ka::VcpuInit i{};
  i.target = ka::kTargetGenericV8;
  i.features[0] = (1u << ka::kFeaturePsci02) | (1u << ka::kFeaturePmuV3) | (sve ? 1u << ka::kFeatureSve : 0);
  return i;
}

int Attr(ka::Device& d, uint32_t group, uint64_t attr, const void* v, bool set = true) {
  kvm_device_attr a{};
  a.group = group;
  a.attr = attr;
  a.addr = reinterpret_cast<uintptr_t>(v);
  return set ? d.SetAttr(a) : d.GetAttr(a);
}

int SetReg(ka::Vcpu& v, uint64_t id, const void* p) {
  kvm_one_reg r{id, reinterpret_cast<uintptr_t>(p)};
  return v.SetOneReg(r);
}
int GetReg(ka::Vcpu& v, uint64_t id, void* p) {
  kvm_one_reg r{id, reinterpret_cast<uintptr_t>(p)};
  return v.GetOneReg(r);
}

// A source VM as a VMM would have built and a guest would have used it:
// vCPU 0 plain, vCPU 1 with SVE and MPIDR Aff1 = 1; a vGICv3 with 96 IRQs,
// an ITS with two translations, a pending SError, timers armed.
struct Source {
  Arm64Model vm;
  std::unique_ptr<ka::Device> gic, its;
  std::vector<ka::VcpuInit> inits{Init(false), Init(true)};

  explicit Source(Arm64Model::Host host = {}) : vm(host) {
    for (size_t i = 0; i < 2; ++i) {
      Arm64ModelVcpu* v;
      EXPECT_EQ(vm.CreateVcpu(&v), 0);
      EXPECT_EQ(v->Init(inits[i]), 0);
    }
    auto& v1 = vm.vcpu(1);
    uint64_t vls[8] = {0x3};  // 128 and 256-bit vectors
    EXPECT_EQ(SetReg(v1, ka::kRegSveVls, vls), 0);
    EXPECT_EQ(v1.Finalize(ka::kFeatureSve), 0);
    for (size_t c = 0; c < 2; ++c) {
      auto& v = vm.vcpu(c);
      for (unsigned i = 0; i < 31; ++i) v.Poke(ka::XReg(i), 0x1000 * (c + 1) + i);
      v.Poke(ka::kRegPc, 0xffff800008000000ull + c * 4);
      v.Poke(ka::kRegPstate, 0x3c5);
      v.Poke(ka::kRegSpEl1, 0xffff80000a000000ull);
      v.Poke(ka::SpsrReg(0), 0x60000005);
      v.Poke(ka::kRegFpcr, 0x03000000);
      v.Poke(ka::SysReg(3, 0, 1, 0, 0), 0x30d0199d);  // SCTLR_EL1
      v.Poke(ka::kRegTcrEl1, 0x00000034b5193519ull);
      v.Poke(ka::kRegTtbr1El1, 0x41a0000 + c);
      v.Poke(ka::SysReg(3, 3, 13, 0, 2), 0xaaaa0000 + c);  // TPIDR_EL0
      v.Poke(ka::kRegArm64 | ka::kU32 | ka::kDemux | 1, 0x1234);
      v.Poke(ka::kFwSmcccWorkaround2, 0);
      v.state().vcval = vm.phys_counter() + 5000;
      v.state().vctl = 1;
      v.state().pcval = 77;
      v.state().pctl = 2;
    }
    for (unsigned i = 0; i < 32; ++i) vm.vcpu(0).state().regs[ka::VReg(i)].assign(16, static_cast<uint8_t>(i + 1));
    for (unsigned i = 0; i < 32; ++i) vm.vcpu(1).state().regs[ka::ZReg(i)].assign(256, static_cast<uint8_t>(0x40 + i));
    vm.vcpu(1).state().regs[ka::PReg(3)].assign(32, 0x33);
    vm.vcpu(1).state().regs[ka::kRegFfr].assign(32, 0xff);
    vm.vcpu(1).Poke(ka::kRegMpidrEl1, 0x80000100);
    vm.vcpu(1).state().mp_state = KVM_MP_STATE_STOPPED;
    vm.vcpu(0).state().events.exception.serror_pending = 1;
    vm.vcpu(0).state().events.exception.serror_has_esr = 1;
    vm.vcpu(0).state().events.exception.serror_esr = 0x123456;
    uint64_t cnt = 0x5000000;
    EXPECT_EQ(SetReg(vm.vcpu(0), ka::kTimerCnt, &cnt), 0);

    EXPECT_EQ(vm.CreateDevice(ka::kDevTypeVgicV3, &gic), 0);
    uint64_t dist = 0x8000000, redist = 0x80a0000, its_base = 0x8080000;
    uint32_t nr = 96;
    EXPECT_EQ(Attr(*gic, ka::kGrpAddr, ka::kAddrDist, &dist), 0);
    EXPECT_EQ(Attr(*gic, ka::kGrpAddr, ka::kAddrRedist, &redist), 0);
    EXPECT_EQ(Attr(*gic, ka::kGrpNrIrqs, 0, &nr), 0);
    EXPECT_EQ(vm.CreateDevice(ka::kDevTypeIts, &its), 0);
    EXPECT_EQ(Attr(*its, ka::kGrpAddr, ka::kAddrIts, &its_base), 0);
    EXPECT_EQ(Attr(*gic, ka::kGrpCtrl, ka::kCtrlInit, nullptr), 0);
    // Guest-programmed GIC state.
    auto& g = *vm.gic();
    uint32_t v = 0;
    for (uint32_t off : ka::DistRegOffsets(96)) {
      v = off * 2654435761u;
      EXPECT_EQ(Attr(*gic, ka::kGrpDistRegs, off, &v), 0);
    }
    for (size_t c = 0; c < 2; ++c) {
      const uint64_t aff = ka::MpidrToAttr(vm.vcpu(c).mpidr()) << 32;
      for (uint32_t off : ka::RedistRegOffsets()) {
        v = off == 0 ? 1 : off * 40503u + static_cast<uint32_t>(c);
        EXPECT_EQ(Attr(*gic, ka::kGrpRedistRegs, aff | off, &v), 0) << off;
      }
      uint64_t ctlr = 4u << 8;  // PRIbits = 4: five bits, as the host
      EXPECT_EQ(Attr(*gic, ka::kGrpCpuSysregs, aff | (ka::CpuSysregEncodings()[1]), &ctlr), 0);
      uint64_t pmr = 0xf0 - c;
      EXPECT_EQ(Attr(*gic, ka::kGrpCpuSysregs, aff | (ka::CpuSysregEncodings()[2]), &pmr), 0);
      uint32_t lvl = 0x10000000u >> c;
      EXPECT_EQ(Attr(*gic, ka::kGrpLevelInfo, aff | 0, &lvl), 0);
    }
    g.state().spi_levels[64] = 0x5;
    // ITS: queue, tables, translations, enabled.
    for (auto [off, val] : std::vector<std::pair<uint32_t, uint64_t>>{
             {0x80, kValid | 0x90000}, {0x88, 0x40}, {0x90, 0x20}, {0x100, kValid | kTable},
             {0x108, kValid | kCollections}, {0x0, 1}}) {
      EXPECT_EQ(Attr(*its, ka::kGrpItsRegs, off, &val), 0) << off;
    }
    // Two devices (MAPD), two collections on the two vCPUs (MAPC), two
    // translations (MAPTI), as a guest's ITS driver leaves them.
    vm.its()->state().devices = {{1, {kItt1, 4}}, {2, {kItt2, 4}}};
    vm.its()->state().collections = {{0, 0}, {1, 1}};
    vm.its()->state().translations = {{1, 0, 8192, 0}, {2, 5, 8200, 1}};
  }

  std::vector<ka::Vcpu*> Vcpus() { return {&vm.vcpu(0), &vm.vcpu(1)}; }
  capture::aarch64::Options Opts() {
    capture::aarch64::Options o;
    o.inits = inits;
    o.gic = gic.get();
    o.its = its.get();
    return o;
  }
};

Status Capture(Source& s, schema::Manifest::Builder m) {
  return capture::aarch64::CaptureManifest(s.vm, s.Vcpus(), s.Opts(), m);
}

struct Dest {
  Arm64Model vm;
  ra::Devices devices;
  explicit Dest(Arm64Model::Host host = {}) : vm(host) {
    EXPECT_EQ(vm.CreateVcpu(), 0);
    EXPECT_EQ(vm.CreateVcpu(), 0);
  }
  std::vector<ka::Vcpu*> Vcpus() { return {&vm.vcpu(0), &vm.vcpu(1)}; }
};

void ExpectSame(Arm64Model& a, Arm64Model& b) {
  ASSERT_EQ(a.vcpu_count(), b.vcpu_count());
  for (size_t i = 0; i < a.vcpu_count(); ++i) {
    EXPECT_TRUE(a.vcpu(i).state() == b.vcpu(i).state()) << "vCPU " << i;
    EXPECT_EQ(a.vcpu(i).vcount(), b.vcpu(i).vcount()) << "virtual counter of vCPU " << i;
  }
  ASSERT_TRUE(a.gic() && b.gic());
  const auto &ga = a.gic()->state(), &gb = b.gic()->state();
  EXPECT_EQ(ga.dist, gb.dist);
  EXPECT_EQ(ga.nr_irqs, gb.nr_irqs);
  EXPECT_EQ(ga.dist_base, gb.dist_base);
  EXPECT_EQ(ga.spi_levels, gb.spi_levels);
  ASSERT_EQ(ga.cpus.size(), gb.cpus.size());
  for (const auto& [mpidr, cpu] : ga.cpus) {
    ASSERT_TRUE(gb.cpus.count(mpidr)) << mpidr;
    EXPECT_EQ(cpu.redist, gb.cpus.at(mpidr).redist) << "redistributor " << mpidr;
    EXPECT_EQ(cpu.sysregs, gb.cpus.at(mpidr).sysregs) << "CPU interface " << mpidr;
    EXPECT_EQ(cpu.ppi_levels, gb.cpus.at(mpidr).ppi_levels);
  }
  ASSERT_TRUE(a.its() && b.its());
  EXPECT_EQ(a.its()->state().base, b.its()->state().base);
  EXPECT_EQ(a.its()->state().regs, b.its()->state().regs);
  EXPECT_EQ(a.its()->state().devices, b.its()->state().devices);
  EXPECT_EQ(a.its()->state().collections, b.its()->state().collections);
  EXPECT_EQ(a.its()->state().translations, b.its()->state().translations);
}

// ---- the model pins the kernel's answers ----

TEST(Arm64Model, OneRegBeforeInitIsENOEXECAndSizesComeFromTheId) {
  Arm64Model vm;
  Arm64ModelVcpu* v;
  ASSERT_EQ(vm.CreateVcpu(&v), 0);
  uint64_t x = 0;
  EXPECT_EQ(GetReg(*v, ka::kRegPc, &x), -ENOEXEC);
  uint64_t n = 0;
  EXPECT_EQ(v->GetRegList(&n, nullptr), -ENOEXEC);
  ASSERT_EQ(v->Init(Init(false)), 0);
  EXPECT_EQ(v->GetRegList(&n, nullptr), -E2BIG);
  std::vector<uint64_t> ids(n);
  ASSERT_EQ(v->GetRegList(&n, ids.data()), 0);
  for (uint64_t id : ids) {
    std::vector<uint8_t> buf(ka::OneRegSize(id) + 8, 0xee);
    ASSERT_EQ(GetReg(*v, id, buf.data()), 0) << std::hex << id;
    EXPECT_EQ(buf[ka::OneRegSize(id)], 0xee) << "wrote past the size the id encodes: " << std::hex << id;
  }
  EXPECT_EQ(GetReg(*v, ka::ZReg(0), &x), -ENOENT);  // no SVE on this vCPU
  EXPECT_EQ(GetReg(*v, ka::SysReg(3, 0, 15, 15, 7), &x), -ENOENT);
}

TEST(Arm64Model, SveVectorLengthsOnlyBeforeFinalizeAndEverythingElseAfter) {
  Arm64Model vm;
  Arm64ModelVcpu* v;
  ASSERT_EQ(vm.CreateVcpu(&v), 0);
  ASSERT_EQ(v->Init(Init(true)), 0);
  uint64_t n = 0;
  EXPECT_EQ(v->GetRegList(&n, nullptr), -EPERM);
  std::vector<uint8_t> z(256);
  EXPECT_EQ(GetReg(*v, ka::ZReg(0), z.data()), -EPERM);
  uint64_t vls[8] = {0x100};  // a length the host lacks
  EXPECT_EQ(SetReg(*v, ka::kRegSveVls, vls), -EINVAL);
  vls[0] = 1;
  EXPECT_EQ(SetReg(*v, ka::kRegSveVls, vls), 0);
  ASSERT_EQ(v->Finalize(ka::kFeatureSve), 0);
  EXPECT_EQ(v->Finalize(ka::kFeatureSve), -EPERM);
  EXPECT_EQ(SetReg(*v, ka::kRegSveVls, vls), -EPERM);
  EXPECT_EQ(GetReg(*v, ka::ZReg(0), z.data()), 0);
  uint64_t x;
  EXPECT_EQ(GetReg(*v, ka::VReg(0), &x), -ENOENT);  // the Z registers hold them
}

TEST(Arm64Model, VgicAttributeGroupsFollowInitialization) {
  Arm64Model vm;
  ASSERT_EQ(vm.CreateVcpu(), 0);
  std::unique_ptr<ka::Device> gic, its;
  EXPECT_EQ(vm.CreateDevice(ka::kDevTypeIts, &its), -ENODEV);  // the ITS needs the vGICv3
  ASSERT_EQ(vm.CreateDevice(ka::kDevTypeVgicV3, &gic), 0);
  uint32_t v = 0;
  EXPECT_EQ(Attr(*gic, ka::kGrpDistRegs, 0, &v), -EBUSY);
  uint64_t base = 0x8000000;
  EXPECT_EQ(Attr(*gic, ka::kGrpAddr, ka::kAddrDist, &base), 0);
  EXPECT_EQ(Attr(*gic, ka::kGrpAddr, ka::kAddrDist, &base), -EEXIST);
  base = 0x8001000;
  EXPECT_EQ(Attr(*gic, ka::kGrpAddr, ka::kAddrRedist, &base), -EINVAL);  // 64K alignment
  ASSERT_EQ(Attr(*gic, ka::kGrpCtrl, ka::kCtrlInit, nullptr), 0);
  uint32_t nr = 128;
  EXPECT_EQ(Attr(*gic, ka::kGrpNrIrqs, 0, &nr), -EBUSY);
  EXPECT_EQ(vm.CreateVcpu(), -EBUSY);
  EXPECT_EQ(Attr(*gic, ka::kGrpDistRegs, 0x104, &v), 0);
  EXPECT_EQ(Attr(*gic, ka::kGrpDistRegs, 0x5000, &v), -ENXIO);
  uint64_t unknown_cpu = 0x7ull << 32;
  EXPECT_EQ(Attr(*gic, ka::kGrpRedistRegs, unknown_cpu, &v), -EINVAL);
  ASSERT_EQ(vm.CreateDevice(ka::kDevTypeIts, &its), 0);
  uint64_t r64 = 0;
  EXPECT_EQ(Attr(*its, ka::kGrpItsRegs, 0x80, &r64), -ENXIO);  // no base address yet
}

// ---- round trips ----

TEST(Arm64RoundTrip, CaptureRestoreCaptureIsLossless) {
  Source src;
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  Status s = Capture(src, m);
  ASSERT_TRUE(s.ok()) << s.message();
  auto vm = m.asReader().getVm().getAarch64();
  EXPECT_TRUE(vm.getGic().getPendingTablesSaved());
  EXPECT_TRUE(vm.getIts().getTablesSaved());
  auto v1 = m.asReader().getVcpus()[1].getAarch64();
  EXPECT_EQ(v1.getSve().getZ().size(), 32u);
  EXPECT_EQ(v1.getFp().getV().size(), 0u);
  EXPECT_EQ(v1.getCore().getX()[30], 0x2000u + 30);

  Dest dst;
  dst.vm.memory() = src.vm.memory();  // guest memory, loaded before the arch state
  s = ra::RestoreManifest(dst.vm, dst.Vcpus(), m.asReader(), &dst.devices);
  ASSERT_TRUE(s.ok()) << s.message();
  ExpectSame(src.vm, dst.vm);

  // And a second capture of the restored VM says the same thing.
  capnp::MallocMessageBuilder msg2;
  auto m2 = msg2.initRoot<schema::Manifest>();
  capture::aarch64::Options o;
  o.inits = src.inits;
  o.gic = dst.devices.gic.get();
  o.its = dst.devices.its.get();
  ASSERT_TRUE(capture::aarch64::CaptureManifest(dst.vm, dst.Vcpus(), o, m2).ok());
  EXPECT_EQ(m.asReader().getVcpus()[0].toString().flatten(), m2.asReader().getVcpus()[0].toString().flatten());
  EXPECT_EQ(m.asReader().getVcpus()[1].toString().flatten(), m2.asReader().getVcpus()[1].toString().flatten());
  EXPECT_EQ(m.asReader().getVm().toString().flatten(), m2.asReader().getVm().toString().flatten());
}

// KVM_DEV_ARM_ITS_SAVE_TABLES leaves the tables in guest memory in the
// layout of arm-vgic-its.rst ("ITS Table ABI REV0"), which any VMM (or a
// later kernel) reads back: each entry checked here against that layout,
// little-endian, with the values the guest mapped.
TEST(Arm64RoundTrip, SavedItsTablesAreTheKernelsDocumentedEntries) {
  Source src;
  capnp::MallocMessageBuilder msg;
  ASSERT_TRUE(Capture(src, msg.initRoot<schema::Manifest>()).ok());
  const auto& mem = src.vm.memory();
  auto entry = [&](uint64_t at) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{mem[at + i]} << (8 * i);
    return v;
  };
  auto bits = [](uint64_t v, unsigned hi, unsigned lo) { return (v >> lo) & ((2ull << (hi - lo)) - 1); };
  // Device table, indexed by DeviceID: V | next | ITT_addr[51:8] | Size.
  EXPECT_EQ(entry(kTable + 0 * 8), 0u) << "DeviceID 0 is not mapped";
  const uint64_t d1 = entry(kTable + 1 * 8), d2 = entry(kTable + 2 * 8);
  EXPECT_EQ(bits(d1, 63, 63), 1u);
  EXPECT_EQ(bits(d1, 62, 49), 1u) << "DeviceID offset to the next DTE";
  EXPECT_EQ(bits(d1, 48, 5) << 8, kItt1);
  EXPECT_EQ(bits(d1, 4, 0), 4u);
  EXPECT_EQ(d1, 0x8002000000011004ull);
  EXPECT_EQ(bits(d2, 63, 63), 1u);
  EXPECT_EQ(bits(d2, 62, 49), 0u) << "the last DTE";
  EXPECT_EQ(bits(d2, 48, 5) << 8, kItt2);
  // Each ITT, indexed by EventID: next | pINTID | ICID.
  const uint64_t e10 = entry(kItt1 + 0 * 8), e25 = entry(kItt2 + 5 * 8);
  EXPECT_EQ(bits(e10, 47, 16), 8192u);
  EXPECT_EQ(bits(e10, 15, 0), 0u);
  EXPECT_EQ(bits(e10, 63, 48), 0u);
  EXPECT_EQ(e25, 0x0000000020080001ull);  // pINTID 8200, ICID 1, last
  for (uint64_t ev = 0; ev < 5; ++ev) EXPECT_EQ(entry(kItt2 + ev * 8), 0u) << "EventID " << ev << " of device 2";
  // Collection table, in no particular order: V | RES0 | RDBase | ICID, then
  // an invalid entry.
  std::map<uint64_t, uint64_t> ctes;
  for (uint64_t at = kCollections; bits(entry(at), 63, 63); at += 8) {
    EXPECT_EQ(bits(entry(at), 62, 52), 0u);
    ctes[bits(entry(at), 15, 0)] = bits(entry(at), 51, 16);
  }
  EXPECT_EQ(ctes, (std::map<uint64_t, uint64_t>{{0, 0}, {1, 1}}));
  EXPECT_EQ(entry(kCollections + 16), 0u);

  // And a restore reads the same translations from them.
  Dest dst;
  dst.vm.memory() = src.vm.memory();
  Status s = ra::RestoreManifest(dst.vm, dst.Vcpus(), msg.getRoot<schema::Manifest>().asReader(), &dst.devices);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(dst.vm.its()->state().devices, src.vm.its()->state().devices);
  EXPECT_EQ(dst.vm.its()->state().collections, src.vm.its()->state().collections);
  EXPECT_EQ(dst.vm.its()->state().translations, src.vm.its()->state().translations);
}

TEST(Arm64RoundTrip, CounterOffsetIsReplayedAndTimerCountWritesThenIgnored) {
  Source src;
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  auto o = src.Opts();
  o.counter_offset = 0x777;
  ASSERT_TRUE(capture::aarch64::CaptureManifest(src.vm, src.Vcpus(), o, m).ok());
  Dest dst;
  dst.vm.memory() = src.vm.memory();
  ASSERT_TRUE(ra::RestoreManifest(dst.vm, dst.Vcpus(), m.asReader(), &dst.devices).ok());
  EXPECT_TRUE(dst.vm.has_counter_offset());
  EXPECT_EQ(dst.vm.voffset(), 0x777u);  // TIMER_CNT did not override it
  // Too late once a vCPU ran.
  Dest late;
  late.vm.Run();
  Status s = ra::RestoreCounterOffset(late.vm, m.asReader().getVm().getAarch64());
  EXPECT_NE(s.message().find("KVM_ARM_SET_COUNTER_OFFSET: Device or resource busy"), std::string::npos) << s.message();
}

TEST(Arm64RoundTrip, HostLackingRegistersIsRefusedNamingEachOne) {
  Source src;
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  ASSERT_TRUE(Capture(src, m).ok());
  Arm64Model::Host older;
  older.ptimer = false;
  older.missing_sysregs = {ka::SysReg(3, 0, 10, 3, 0)};  // AMAIR_EL1
  Dest dst(older);
  Status s = ra::RestoreManifest(dst.vm, dst.Vcpus(), m.asReader(), &dst.devices);
  EXPECT_EQ(s.code(), Code::kUnsupported);
  for (const char* id : {"0x603000000013c518", "0x603000000013df11", "0x603000000013df01", "0x603000000013df12"})
    EXPECT_NE(s.message().find(id), std::string::npos) << id << " in: " << s.message();
  EXPECT_NE(s.message().find("lacks 4 registers"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("vCPU 0"), std::string::npos) << s.message();
}

TEST(Arm64RoundTrip, AnSErrorSyndromeNeedsRasOnTheHost) {
  Source src;
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  ASSERT_TRUE(Capture(src, m).ok());
  Arm64Model::Host no_ras;
  no_ras.ras = false;
  Dest dst(no_ras);
  dst.vm.memory() = src.vm.memory();
  Status s = ra::RestoreManifest(dst.vm, dst.Vcpus(), m.asReader(), &dst.devices);
  EXPECT_NE(s.message().find("KVM_SET_VCPU_EVENTS"), std::string::npos) << s.message();
}

// ---- every ordering rule, broken ----

struct Broken : ::testing::Test {
  void SetUp() override {
    ASSERT_TRUE(Capture(src, msg->initRoot<schema::Manifest>()).ok());
    m = msg->getRoot<schema::Manifest>().asReader();
    dst.vm.memory() = src.vm.memory();
  }
  schema::aarch64::Vcpu::Reader V(unsigned i) { return m.getVcpus()[i].getAarch64(); }
  schema::aarch64::Vm::Reader VmState() { return m.getVm().getAarch64(); }
  // Everything in order up to (not including) the GIC state.
  void UpToGicInit() {
    for (unsigned i = 0; i < 2; ++i) {
      ASSERT_TRUE(ra::InitVcpu(dst.vm.vcpu(i), V(i)).ok());
      ASSERT_TRUE(ra::RestoreVcpuRegs(dst.vm.vcpu(i), V(i)).ok());
    }
    ASSERT_TRUE(ra::CreateDevices(dst.vm, VmState(), &dst.devices).ok());
    ASSERT_TRUE(ra::InitGic(*dst.devices.gic).ok());
  }
  Source src;
  std::unique_ptr<capnp::MallocMessageBuilder> msg = std::make_unique<capnp::MallocMessageBuilder>();
  schema::Manifest::Reader m;
  Dest dst;
};

TEST_F(Broken, RegistersBeforeVcpuInitFail) {
  Status s = ra::RestoreVcpuRegs(dst.vm.vcpu(0), V(0));
  EXPECT_NE(s.message().find("KVM_SET_ONE_REG X0: Exec format error"), std::string::npos) << s.message();
}

TEST_F(Broken, SveRegistersBeforeFinalizeFail) {
  ka::VcpuInit init = Init(true);
  ASSERT_EQ(dst.vm.vcpu(1).Init(init), 0);  // no VLS, no FINALIZE
  Status s = ra::RestoreVcpuRegs(dst.vm.vcpu(1), V(1));
  EXPECT_NE(s.message().find("KVM_SET_ONE_REG Z0: Operation not permitted"), std::string::npos) << s.message();
}

TEST_F(Broken, VectorLengthsAfterFinalizeFail) {
  ASSERT_EQ(dst.vm.vcpu(1).Init(Init(true)), 0);
  ASSERT_EQ(dst.vm.vcpu(1).Finalize(ka::kFeatureSve), 0);
  Status s = ra::InitVcpu(dst.vm.vcpu(1), V(1));
  EXPECT_NE(s.message().find("KVM_REG_ARM64_SVE_VLS: Operation not permitted"), std::string::npos) << s.message();
}

// The count first, then the compare value, then the control: a timer
// programmed before its count is restored fires against the destination's
// own counter. vCPU 0's virtual timer is due 0x100001388 - 0x5000000 ticks
// after the capture; written before TIMER_CNT, against the new VM's counter
// (0x100000000 in the model), it fires after 5000.
TEST_F(Broken, TimerCompareBeforeTheCountFiresAtTheWrongTime) {
  auto timer_fired = [](Arm64ModelVcpu& v) {
    uint64_t ctl = 0;
    EXPECT_EQ(GetReg(v, ka::kTimerCtl, &ctl), 0);
    return (ctl & 4) != 0;  // ISTATUS
  };
  ASSERT_TRUE(ra::InitVcpu(dst.vm.vcpu(0), V(0)).ok());
  ASSERT_TRUE(ra::RestoreVcpuRegs(dst.vm.vcpu(0), V(0)).ok());
  dst.vm.AdvanceCounter(6000);
  EXPECT_FALSE(timer_fired(dst.vm.vcpu(0))) << "restored in order, the timer is not due yet";
  EXPECT_LT(dst.vm.vcpu(0).vcount(), V(0).getTimer().getCval());

  Dest wrong;
  ASSERT_TRUE(ra::InitVcpu(wrong.vm.vcpu(0), V(0)).ok());
  auto t = V(0).getTimer();
  uint64_t cval = t.getCval(), ctl = t.getCtl(), cnt = t.getCnt();
  ASSERT_EQ(SetReg(wrong.vm.vcpu(0), ka::kTimerCval, &cval), 0);
  ASSERT_EQ(SetReg(wrong.vm.vcpu(0), ka::kTimerCtl, &ctl), 0);
  ASSERT_EQ(SetReg(wrong.vm.vcpu(0), ka::kTimerCnt, &cnt), 0);
  wrong.vm.AdvanceCounter(6000);
  EXPECT_LT(wrong.vm.vcpu(0).vcount(), cval);
  EXPECT_TRUE(timer_fired(wrong.vm.vcpu(0))) << "CVAL before CNT: fired against the fresh counter";
}

TEST_F(Broken, VcpuCreatedAfterVgicInitFails) {
  Arm64Model vm;
  ASSERT_EQ(vm.CreateVcpu(), 0);
  ra::Devices d;
  ASSERT_TRUE(ra::CreateDevices(vm, VmState(), &d).ok());
  ASSERT_TRUE(ra::InitGic(*d.gic).ok());
  EXPECT_EQ(vm.CreateVcpu(), -EBUSY);
}

TEST_F(Broken, GicStateBeforeVgicInitFails) {
  for (unsigned i = 0; i < 2; ++i) ASSERT_TRUE(ra::InitVcpu(dst.vm.vcpu(i), V(i)).ok());
  ASSERT_TRUE(ra::CreateDevices(dst.vm, VmState(), &dst.devices).ok());
  Status s = ra::RestoreGicState(*dst.devices.gic, VmState().getGic());
  EXPECT_NE(s.message().find("GICD+0x0000000000000000: Device or resource busy"), std::string::npos) << s.message();
}

TEST_F(Broken, NrIrqsAfterVgicInitFails) {
  std::unique_ptr<ka::Device> gic;
  ASSERT_EQ(dst.vm.CreateDevice(ka::kDevTypeVgicV3, &gic), 0);
  ASSERT_TRUE(ra::InitGic(*gic).ok());
  uint32_t nr = 96;
  EXPECT_EQ(Attr(*gic, ka::kGrpNrIrqs, 0, &nr), -EBUSY);
}

TEST_F(Broken, GicStateBeforeTheVcpusMpidrsFails) {
  // The redistributors are named by MPIDR: vCPU 1's is only right once its
  // system registers are restored.
  for (unsigned i = 0; i < 2; ++i) ASSERT_TRUE(ra::InitVcpu(dst.vm.vcpu(i), V(i)).ok());
  ASSERT_TRUE(ra::CreateDevices(dst.vm, VmState(), &dst.devices).ok());
  ASSERT_TRUE(ra::InitGic(*dst.devices.gic).ok());
  Status s = ra::RestoreGicState(*dst.devices.gic, VmState().getGic());
  EXPECT_NE(s.message().find("of vCPU 1: Invalid argument"), std::string::npos) << s.message();
}

TEST_F(Broken, RedistributorCtlrBeforeItsBaseRegistersLosesThem) {
  UpToGicInit();
  // GICR_CTLR (EnableLPIs) first: PROPBASER/PENDBASER are then ignored.
  auto gic = VmState().getGic();
  auto cpu = gic.getCpus()[0];
  const uint64_t aff = ka::MpidrToAttr(cpu.getMpidr()) << 32;
  for (auto r : cpu.getRedist()) {
    if (r.getOffset() != 0) continue;
    uint32_t v = r.getValue();
    ASSERT_EQ(Attr(*dst.devices.gic, ka::kGrpRedistRegs, aff | 0, &v), 0);
  }
  ASSERT_TRUE(ra::RestoreGicState(*dst.devices.gic, gic).ok());
  EXPECT_NE(src.vm.gic()->state().cpus.at(aff >> 32).redist.at(0x70),
            dst.vm.gic()->state().cpus.at(aff >> 32).redist.at(0x70));
}

TEST_F(Broken, RedistributorsBeforeTheItsExistsLoseEnableLpis) {
  for (unsigned i = 0; i < 2; ++i) {
    ASSERT_TRUE(ra::InitVcpu(dst.vm.vcpu(i), V(i)).ok());
    ASSERT_TRUE(ra::RestoreVcpuRegs(dst.vm.vcpu(i), V(i)).ok());
  }
  ASSERT_EQ(dst.vm.CreateDevice(ka::kDevTypeVgicV3, &dst.devices.gic), 0);
  uint32_t nr = 96;
  ASSERT_EQ(Attr(*dst.devices.gic, ka::kGrpNrIrqs, 0, &nr), 0);
  ASSERT_TRUE(ra::InitGic(*dst.devices.gic).ok());
  ASSERT_TRUE(ra::RestoreGicState(*dst.devices.gic, VmState().getGic()).ok());
  EXPECT_EQ(dst.vm.gic()->state().cpus.begin()->second.redist.at(0) & 1, 0u);
  EXPECT_EQ(src.vm.gic()->state().cpus.begin()->second.redist.at(0) & 1, 1u);
}

TEST_F(Broken, ItsTablesBeforeGuestMemoryLoseTheTranslations) {
  Dest empty;  // guest memory not loaded yet
  Status s = ra::RestoreManifest(empty.vm, empty.Vcpus(), m, &empty.devices);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(empty.vm.its()->state().translations.empty());
  EXPECT_EQ(src.vm.its()->state().translations.size(), 2u);
}

TEST_F(Broken, ItsEnabledFirstIgnoresItsTableRegistersAndRefusesCreadr) {
  UpToGicInit();
  ASSERT_TRUE(ra::RestoreGicState(*dst.devices.gic, VmState().getGic()).ok());
  // GITS_CTLR first (with CBASER/BASERs valid so that the enable sticks).
  for (uint32_t off : {0x80u, 0x100u, 0x108u, 0x0u}) {
    for (auto r : VmState().getIts().getRegs()) {
      if (r.getOffset() != off) continue;
      uint64_t v = r.getValue() | (off ? kValid : 0);
      ASSERT_EQ(Attr(*dst.devices.its, ka::kGrpItsRegs, off, &v), 0);
    }
  }
  Status s = ra::RestoreIts(*dst.devices.its, VmState().getIts());
  EXPECT_NE(s.message().find("GITS+0x0000000000000090: Device or resource busy"), std::string::npos) << s.message();
}

TEST_F(Broken, CreadrBeforeCbaserIsReset) {
  UpToGicInit();
  uint64_t creadr = 0x20, cbaser = kValid | 0x90000;
  ASSERT_EQ(Attr(*dst.devices.its, ka::kGrpItsRegs, 0x90, &creadr), 0);
  ASSERT_EQ(Attr(*dst.devices.its, ka::kGrpItsRegs, 0x80, &cbaser), 0);
  EXPECT_EQ(dst.vm.its()->state().regs.at(0x90), 0u);  // what restoring in the wrong order leaves
}

TEST_F(Broken, SetRegistersWithoutTheirClearLeaveStaleBits) {
  UpToGicInit();
  // Bits set on the destination before the restore (a VM that already ran)
  // survive unless the clear register is written first; RestoreGicState does.
  uint32_t all = ~0u;
  ASSERT_EQ(Attr(*dst.devices.gic, ka::kGrpDistRegs, 0x104, &all), 0);
  ASSERT_TRUE(ra::RestoreGicState(*dst.devices.gic, VmState().getGic()).ok());
  EXPECT_EQ(dst.vm.gic()->state().dist.at(0x104), src.vm.gic()->state().dist.at(0x104));
  uint32_t mine = src.vm.gic()->state().dist.at(0x104);
  ASSERT_NE(mine, ~0u);
  uint32_t extra = ~mine & (0u - ~mine);  // a bit the saved value does not have
  ASSERT_EQ(Attr(*dst.devices.gic, ka::kGrpDistRegs, 0x104, &extra), 0);
  ASSERT_EQ(Attr(*dst.devices.gic, ka::kGrpDistRegs, 0x104, &mine), 0);  // set alone
  EXPECT_EQ(dst.vm.gic()->state().dist.at(0x104), mine | extra) << "a set register alone cannot clear";
}

// ---- through a .vmsnap file and the arch-neutral restore order ----

// The VMM side of restore::RestoreInto on the model: a VM, its RAM, its
// vCPUs when asked, and a log of the calls, in the order they came.
class ModelTarget final : public restore::RestoreTarget {
 public:
  explicit ModelTarget(Arm64Model::Host host = {}) : host_(host) {}
  schema::Arch arch() const override { return schema::Arch::AARCH64; }
  unsigned max_vcpus() const override { return 8; }
  Result<restore::ArchRestorer*> CreateVm() override {
    vm = std::make_unique<Arm64Model>(host_);
    restorer = std::make_unique<ra::Arm64Restorer>(*vm);
    return static_cast<restore::ArchRestorer*>(restorer.get());
  }
  Result<std::vector<kvm::GuestRegion>> CreateMemory(const std::vector<kvm::GuestRegion>& layout) override {
    std::vector<kvm::GuestRegion> views = layout;
    for (auto& r : views) {
      if (r.gpa + r.size > vm->memory().size()) return Status::InvalidArgument("region beyond the model's RAM");
      r.host = vm->memory().data() + r.gpa;
    }
    return views;
  }
  Status RegisterMemory() override { return Status::Ok(); }
  Status CreateVcpus(unsigned count) override {
    std::vector<ka::Vcpu*> vcpus;
    for (unsigned i = 0; i < count; ++i) {
      Arm64ModelVcpu* v = nullptr;
      if (int rc = vm->CreateVcpu(&v); rc < 0) return Status::Io("KVM_CREATE_VCPU: " + std::to_string(rc));
      vcpus.push_back(v);
    }
    restorer->set_vcpus(std::move(vcpus));
    return Status::Ok();
  }
  std::unique_ptr<Arm64Model> vm;
  std::unique_ptr<ra::Arm64Restorer> restorer;

 private:
  Arm64Model::Host host_;
};

struct Arm64SnapshotFile : ::testing::Test {
  void SetUp() override {
    char t[] = "/tmp/vmsnap-arm64-XXXXXX";
    dir = ::mkdtemp(t);
    path = dir + "/arm64.vmsnap";
  }
  void TearDown() override { (void)std::system(("rm -rf '" + dir + "'").c_str()); }
  // The guest's RAM itself: the capture writes the ITS tables into it before
  // the writer reads it.
  void Write(Source& src) {
    kvm::GuestRegion region;
    region.gpa = 0;
    region.size = 192 * 4096;
    region.host = src.vm.memory().data();
    region.name = "ram";
    capture::aarch64::Arm64Capturer cap(src.vm, src.Vcpus(), src.Opts());
    capture::CaptureOptions copts;
    copts.writer.threads = 1;
    auto written = capture::WriteSnapshot(path, cap, {&region, 1}, copts);
    ASSERT_TRUE(written.ok()) << written.status().message();
  }
  Status Restore(ModelTarget& target) {
    auto chain = SnapshotChain::Open(path);
    if (!chain.ok()) return chain.status();
    return restore::RestoreInto(std::make_shared<const SnapshotChain>(std::move(*chain)), target, nullptr);
  }
  std::string dir, path;
};

TEST_F(Arm64SnapshotFile, WritesFormat11AndRestoresThroughRestoreInto) {
  Source src;
  Write(src);
  auto reader = SnapshotReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status().message();
  EXPECT_EQ((*reader)->format_minor(), 1);
  EXPECT_EQ((*reader)->manifest().getArch(), schema::Arch::AARCH64);
  ASSERT_TRUE((*reader)->VerifyAll().ok());
  ModelTarget target;
  Status s = Restore(target);
  ASSERT_TRUE(s.ok()) << s.message();
  ExpectSame(src.vm, *target.vm);
}

TEST_F(Arm64SnapshotFile, AHostLackingRegistersIsRefusedBeforeAnyStateIsWritten) {
  Source src;
  Write(src);
  Arm64Model::Host older;
  older.missing_sysregs = {ka::SysReg(3, 0, 10, 3, 0)};  // AMAIR_EL1
  ModelTarget target(older);
  Status s = Restore(target);
  EXPECT_EQ(s.code(), Code::kUnsupported) << s.message();
  EXPECT_NE(s.message().find("0x603000000013c518"), std::string::npos) << s.message();
  // CheckVcpus refused it: no register written, no vGIC created.
  EXPECT_EQ(target.vm->vcpu(0).Peek(ka::XReg(0)), 0u);
  EXPECT_EQ(target.vm->gic(), nullptr);
}

TEST_F(Arm64SnapshotFile, RestoreStateBeforeCheckVcpusFails) {
  // The steps out of RestoreInto's order: the registers need KVM_ARM_VCPU_INIT.
  Source src;
  Write(src);
  auto reader = SnapshotReader::Open(path);
  ASSERT_TRUE(reader.ok());
  Dest dst;
  ra::Arm64Restorer r(dst.vm);
  r.set_vcpus(dst.Vcpus());
  ASSERT_TRUE(r.RestoreVmConfig((*reader)->manifest()).ok());
  Status s = r.RestoreState((*reader)->manifest());
  EXPECT_NE(s.message().find("KVM_SET_ONE_REG X0: Exec format error"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace vmsnap
