// SPDX-License-Identifier: MIT
// Where vCPUs resume: the addresses each architecture's registers give, and
// the pages those translate to through hand-built page tables.
#include <gtest/gtest.h>

#include <capnp/message.h>

#include <set>
#include <vector>

#include "guest/start_pages.h"
#include "tests/guest/buffer_memory.h"

namespace vmsnap::guest {
namespace {

using testing::BufferMemory;

constexpr uint64_t kP = 1, kRW = 2;
constexpr uint64_t kPg = 1ull << 31, kPe = 1, kPae = 1ull << 5, kLma = 1ull << 10, kLme = 1ull << 8;

// Records which pages were read, so a test sees what a lazy loader would
// have brought in.
class ReadLog final : public PhysicalMemory {
 public:
  explicit ReadLog(const PhysicalMemory& below) : below_(below) {}
  const std::vector<Region>& regions() const override { return below_.regions(); }
  Status Read(uint64_t gpa, uint64_t len, uint8_t* out) const override {
    pages.insert(gpa & ~uint64_t(4095));
    return below_.Read(gpa, len, out);
  }
  mutable std::set<uint64_t> pages;

 private:
  const PhysicalMemory& below_;
};

struct X86Vcpu {
  uint64_t cr0 = kPg | kPe, cr3 = 0x1000, cr4 = kPae, efer = kLma | kLme;
  uint64_t cs_base = 0, rip = 0, ss_base = 0, rsp = 0;
};

void SetX86(schema::Manifest::Builder m, const std::vector<X86Vcpu>& vcpus) {
  m.setArch(schema::Arch::X8664);
  auto list = m.initVcpus(static_cast<unsigned>(vcpus.size()));
  for (unsigned i = 0; i < vcpus.size(); ++i) {
    auto x = list[i].initX8664();
    x.initRegs().setRip(vcpus[i].rip);
    x.getRegs().setRsp(vcpus[i].rsp);
    auto s = x.initSregs();
    s.setCr0(vcpus[i].cr0);
    s.setCr3(vcpus[i].cr3);
    s.setCr4(vcpus[i].cr4);
    s.setEfer(vcpus[i].efer);
    s.initCs().setBase(vcpus[i].cs_base);
    s.initSs().setBase(vcpus[i].ss_base);
  }
}

// 4-level tables at 0x1000 (PML4), 0x2000, 0x3000, 0x4000 (PT) mapping
// the first 2 MiB: code at 0x10000 is mapped to 0x80000, the stack page
// 0x20000 to 0x90000, page 0x30000 to 0xa0000; nothing else.
BufferMemory LongModeTables() {
  BufferMemory mem(1 << 20);
  mem.Put(0x1000, 0x2000 | kP | kRW);
  mem.Put(0x2000, 0x3000 | kP | kRW);
  mem.Put(0x3000, 0x4000 | kP | kRW);
  mem.Put(0x4000 + 0x10 * 8, 0x80000 | kP);
  mem.Put(0x4000 + 0x20 * 8, 0x90000 | kP | kRW);
  mem.Put(0x4000 + 0x30 * 8, 0xa0000 | kP | kRW);
  return mem;
}

TEST(StartPages, LongModeCodeAndStackPagesAndTheTablesOnTheWay) {
  BufferMemory mem = LongModeTables();
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  // RSP at the top of its page: the next push lands on the page below.
  SetX86(m, {{.rip = 0x10ff0, .rsp = 0x21000}});
  EXPECT_EQ(StartAddresses(m.asReader(), 0), (std::vector<uint64_t>{0x10ff0, 0x20ff8}));
  ReadLog log(mem);
  EXPECT_EQ(StartPages(m.asReader(), log), (std::vector<uint64_t>{0x80000, 0x90000}));
  EXPECT_EQ(log.pages, (std::set<uint64_t>{0x1000, 0x2000, 0x3000, 0x4000}));
}

TEST(StartPages, EveryVcpuOnceEachAndUnmappedAddressesLeftOut) {
  BufferMemory mem = LongModeTables();
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  // vCPU 1 runs the same code; its stack (0x50000) is not mapped.
  SetX86(m, {{.rip = 0x10000, .rsp = 0x21000}, {.rip = 0x10008, .rsp = 0x51000}, {.rip = 0x30000, .rsp = 0x21000}});
  EXPECT_EQ(StartPages(m.asReader(), mem), (std::vector<uint64_t>{0x80000, 0x90000, 0xa0000}));
}

TEST(StartPages, SegmentBasesCountAndAddressesWrapOutsideLongMode) {
  BufferMemory mem(1 << 20);
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  // Real mode at the reset vector's segment; a 32-bit stack that wraps.
  SetX86(m, {{.cr0 = 0, .cr3 = 0, .cr4 = 0, .efer = 0, .cs_base = 0xf0000, .rip = 0xfff0, .ss_base = 0xfffff000,
              .rsp = 0x2000}});
  EXPECT_EQ(StartAddresses(m.asReader(), 0), (std::vector<uint64_t>{0xffff0, 0xff8}));
  EXPECT_EQ(StartPages(m.asReader(), mem), (std::vector<uint64_t>{0xff000, 0x0}));
}

TEST(StartPages, AWalkThatFailsAddsNothing) {
  BufferMemory mem(1 << 20);
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  SetX86(m, {{.cr3 = 0x4000000, .rip = 0x10000, .rsp = 0x21000}});  // CR3 outside guest memory
  EXPECT_TRUE(StartPages(m.asReader(), mem).empty());
}

TEST(StartPages, Arm64PcAndTheStackPointerPstateSelects) {
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  m.setArch(schema::Arch::AARCH64);
  auto vcpus = m.initVcpus(4);
  auto el1h = vcpus[0].initAarch64().initCore();
  el1h.setPc(0x40001000);
  el1h.setPstate(0x3c5);  // EL1h, DAIF masked
  el1h.setSpEl1(0x40080000);
  el1h.setSpEl0(0x7000);
  auto el0 = vcpus[1].initAarch64().initCore();
  el0.setPc(0x400000);
  el0.setPstate(0);  // EL0t
  el0.setSpEl0(0x7000);
  el0.setSpEl1(0x40080000);
  auto a32 = vcpus[2].initAarch64().initCore();
  a32.setPc(0x8000);
  a32.setPstate(0x10);  // nRW: AArch32 user
  auto el2h = vcpus[3].initAarch64().initCore();
  el2h.setPc(0x9000);
  el2h.setPstate(0x9);  // EL2h: SP_EL2, which the vCPU's core registers do not hold
  el2h.setSpEl1(0x40080000);
  EXPECT_EQ(StartAddresses(m.asReader(), 0), (std::vector<uint64_t>{0x40001000, 0x4007fff8}));
  EXPECT_EQ(StartAddresses(m.asReader(), 1), (std::vector<uint64_t>{0x400000, 0x6ff8}));
  EXPECT_EQ(StartAddresses(m.asReader(), 2), (std::vector<uint64_t>{0x8000}));
  EXPECT_EQ(StartAddresses(m.asReader(), 3), (std::vector<uint64_t>{0x9000}));
  // No sysregs: SCTLR_EL1.M is 0, addresses are physical; the ones past
  // this 1 MiB of memory are outside it.
  BufferMemory mem(1 << 20);
  EXPECT_EQ(StartPages(m.asReader(), mem), (std::vector<uint64_t>{0x6000, 0x8000, 0x9000}));
}

TEST(StartPages, NoneForArchitecturesWhoseMmuIsNotWalked) {
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  m.setArch(schema::Arch::S390X);
  m.initVcpus(1)[0].initS390x();
  BufferMemory mem(1 << 20);
  EXPECT_TRUE(StartAddresses(m.asReader(), 0).empty());
  EXPECT_TRUE(StartPages(m.asReader(), mem).empty());
  EXPECT_TRUE(StartAddresses(m.asReader(), 5).empty());
}

}  // namespace
}  // namespace vmsnap::guest
