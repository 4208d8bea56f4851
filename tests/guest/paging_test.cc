// SPDX-License-Identifier: MIT
// The page walker, in-process over memory held in a test buffer: every paging
// mode, page size and stop reason, x86 and aarch64.
#include <gtest/gtest.h>

#include <capnp/message.h>

#include <vector>

#include "guest/paging.h"
#include "tests/guest/buffer_memory.h"

namespace vmsnap::guest {
namespace {

using testing::BufferMemory;

constexpr uint64_t kP = 1, kRW = 2, kPS = 0x80;
constexpr uint64_t kPg = 1ull << 31, kPae = 1ull << 5, kPse = 1ull << 4, kLa57 = 1ull << 12;
constexpr uint64_t kLma = 1ull << 10;

TEST(Paging, ModesFollowControlRegisters) {
  EXPECT_EQ(ModeOf({0x11, 0, 0, 0}), PagingMode::kNone);
  EXPECT_EQ(ModeOf({kPg | 1, 0, 0, 0}), PagingMode::kLegacy32);
  EXPECT_EQ(ModeOf({kPg | 1, 0, kPae, 0}), PagingMode::kPae);
  EXPECT_EQ(ModeOf({kPg | 1, 0, kPae, kLma | 0x100}), PagingMode::kLong4);
  EXPECT_EQ(ModeOf({kPg | 1, 0, kPae | kLa57, kLma | 0x100}), PagingMode::kLong5);
}

TEST(Paging, NoPagingIsIdentityBelow4G) {
  BufferMemory mem(1 << 20);
  auto t = Translate(mem, {0x11, 0, 0, 0}, 0x1234);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->mapped);
  EXPECT_EQ(t->gpa, 0x1234u);
  EXPECT_FALSE(Translate(mem, {0x11, 0, 0, 0}, 0x100000000ull).ok());
}

TEST(Paging, Legacy32With4KAnd4MPages) {
  BufferMemory mem(16 << 20);
  // PD at 0x1000; gva 0x00401000 -> PT at 0x2000 -> page 0x5000; gva 0x00800000 -> 4 MiB page 0xc00000.
  mem.Put(0x1000 + 4 * 1, 0x2000 | kP | kRW, 4);
  mem.Put(0x2000 + 4 * 1, 0x5000 | kP | kRW, 4);
  mem.Put(0x1000 + 4 * 2, 0xc00000 | kP | kRW | kPS, 4);
  PagingRegs regs{kPg | 1, 0x1000, kPse, 0};
  auto t = Translate(mem, regs, 0x00401abc);
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_TRUE(t->mapped);
  EXPECT_EQ(t->gpa, 0x5abcu);
  ASSERT_EQ(t->steps.size(), 2u);
  EXPECT_EQ(t->steps[0].entry_bytes, 4u);
  auto big = Translate(mem, regs, 0x00923456);
  ASSERT_TRUE(big.ok());
  ASSERT_TRUE(big->mapped);
  EXPECT_EQ(big->page_size, 4u << 20);
  EXPECT_EQ(big->gpa, 0xd23456u);
}

TEST(Paging, PaeWith2MPages) {
  BufferMemory mem(16 << 20);
  // CR3 -> PDPT at 0x1020 (32-byte aligned); PDPTE 1 -> PD at 0x3000; PDE 2 -> 2 MiB page at 0x600000.
  mem.Put(0x1020 + 8 * 1, 0x3000 | kP);
  mem.Put(0x3000 + 8 * 2, 0x600000 | kP | kRW | kPS);
  auto t = Translate(mem, {kPg | 1, 0x1020, kPae, 0}, 0x40400000 + 0x1234);
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_TRUE(t->mapped);
  EXPECT_EQ(t->gpa, 0x601234u);
  ASSERT_EQ(t->steps.size(), 2u);
  EXPECT_STREQ(t->steps[0].level, "PDPT");
  EXPECT_EQ(t->steps[0].index, 1u);
}

TEST(Paging, LongModeStopsAtNonPresentEntryWithItsAddress) {
  BufferMemory mem(1 << 20);
  mem.Put(0x1000, 0x2000 | kP | kRW);  // PML4[0] -> PDPT at 0x2000, PDPT empty
  auto t = Translate(mem, {kPg | 1, 0x1000, kPae, kLma}, 0x40000000);
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->mapped);
  ASSERT_EQ(t->steps.size(), 2u);
  EXPECT_STREQ(t->steps.back().level, "PDPT");
  EXPECT_EQ(t->steps.back().entry_gpa, 0x2008u);
  EXPECT_EQ(FaultMessage(*t),
            "gva 0x40000000 is not mapped: PDPT entry 1 at gpa 0x2008 is 0x0000000000000000 (not present)");
}

TEST(Paging, LongModeRejectsNonCanonicalAndPsInPml4) {
  BufferMemory mem(1 << 20);
  mem.Put(0x1000, 0x2000 | kP | kPS);
  PagingRegs regs{kPg | 1, 0x1000, kPae, kLma};
  EXPECT_FALSE(Translate(mem, regs, 0x0000800000000000ull).ok());
  auto t = Translate(mem, regs, 0x1000);
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(t->mapped);
  EXPECT_NE(t->fault.find("reserved"), std::string::npos);
  // With LA57 the same address is canonical.
  PagingRegs five{kPg | 1, 0x1000, kPae | kLa57, kLma};
  EXPECT_TRUE(Translate(mem, five, 0x0000800000000000ull).ok());
}

TEST(Paging, TableOutsideMemoryIsAnError) {
  BufferMemory mem(1 << 20);
  mem.Put(0x1000, 0x40000000 | kP);
  auto t = Translate(mem, {kPg | 1, 0x1000, kPae, kLma}, 0x1000);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("PDPT entry at 0x40000000"), std::string::npos) << t.status().message();
}

// ---- aarch64 stage 1, hand-built tables for each granule ----

constexpr uint64_t kTbl = 3, kPage = 3 | 0x400, kBlock = 1 | 0x400;  // valid|table, +AF
PagingRegs Arm(uint64_t tcr, uint64_t ttbr0, uint64_t ttbr1 = 0) {
  PagingRegs r;
  r.arm64 = true;
  r.sctlr = 0x30d0199d | 1;  // M: the MMU is on
  r.tcr = tcr;
  r.ttbr0 = ttbr0;
  r.ttbr1 = ttbr1;
  return r;
}

TEST(PagingArm64, FourKilobyteGranuleFourLevelsBlocksAndTtbr1) {
  BufferMemory mem(1 << 20);
  const uint64_t tcr = 16 | (16ull << 16) | (2ull << 30);  // T0SZ=T1SZ=16, TG0 4K, TG1 4K
  mem.Put(0x10000 + 8 * 1, 0x11000 | kTbl);
  mem.Put(0x11000 + 8 * 2, 0x12000 | kTbl);
  mem.Put(0x12000 + 8 * 3, 0x13000 | kTbl);
  mem.Put(0x13000 + 8 * 4, 0x20000 | kPage | (1ull << 54));
  mem.Put(0x12000 + 8 * 5, 0x200000 | kBlock);
  const uint64_t base = (1ull << 39) + (2ull << 30);
  auto t = Translate(mem, Arm(tcr, 0x10000), base + (3ull << 21) + (4ull << 12) + 0x567);
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_TRUE(t->mapped);
  EXPECT_EQ(t->mode, PagingMode::kArm64_4K);
  EXPECT_EQ(t->gpa, 0x20567u);
  EXPECT_EQ(t->page_size, 4096u);
  ASSERT_EQ(t->steps.size(), 4u);
  EXPECT_STREQ(t->steps[0].level, "L0");
  EXPECT_EQ(t->steps[3].entry_gpa, 0x13000u + 32);
  EXPECT_EQ(EntryFlags(t->steps[3]), "PAGE AF AP=00 SH=0 ATTR=0 UXN");
  auto blk = Translate(mem, Arm(tcr, 0x10000), base + (5ull << 21) + 0x12345);
  ASSERT_TRUE(blk.ok() && blk->mapped);
  EXPECT_EQ(blk->page_size, 2u << 20);
  EXPECT_EQ(blk->gpa, 0x212345u);
  // The upper half goes through TTBR1_EL1.
  mem.Put(0x30000 + 8 * 0x1ff, 0x31000 | kTbl);
  mem.Put(0x31000, 0x32000 | kTbl);
  mem.Put(0x32000, 0x33000 | kTbl);
  mem.Put(0x33000 + 8, 0x40000 | kPage);
  auto hi = Translate(mem, Arm(tcr, 0x10000, 0x30000), 0xffffff8000001abcull);
  ASSERT_TRUE(hi.ok()) << hi.status().message();
  ASSERT_TRUE(hi->mapped);
  EXPECT_STREQ(hi->root_name, "TTBR1_EL1");
  EXPECT_EQ(hi->gpa, 0x40abcu);
  // An address outside both ranges, and an invalid descriptor.
  EXPECT_FALSE(Translate(mem, Arm(tcr, 0x10000), 0x0001000000000000ull).ok());
  auto miss = Translate(mem, Arm(tcr, 0x10000), base + (6ull << 21));
  ASSERT_TRUE(miss.ok());
  EXPECT_FALSE(miss->mapped);
  EXPECT_NE(FaultMessage(*miss).find("L2 entry 6"), std::string::npos) << FaultMessage(*miss);
  EXPECT_NE(FaultMessage(*miss).find("invalid descriptor"), std::string::npos);
}

TEST(PagingArm64, SixteenKilobyteGranuleStartsAtLevelOne) {
  BufferMemory mem(1 << 20);
  const uint64_t tcr = 17 | (2ull << 14);  // 47-bit input, TG0 16K: levels 1..3
  mem.Put(0x40000 + 8 * 1, 0x44000 | kTbl);
  mem.Put(0x44000 + 8 * 2, 0x48000 | kTbl);
  mem.Put(0x48000 + 8 * 3, 0x50000 | kPage);
  mem.Put(0x44000 + 8 * 4, 0x2000000 | kBlock);
  auto t = Translate(mem, Arm(tcr, 0x40000), (1ull << 36) + (2ull << 25) + (3ull << 14) + 0x1abc);
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_TRUE(t->mapped);
  EXPECT_EQ(t->mode, PagingMode::kArm64_16K);
  ASSERT_EQ(t->steps.size(), 3u);
  EXPECT_STREQ(t->steps[0].level, "L1");
  EXPECT_EQ(t->page_size, 16384u);
  EXPECT_EQ(t->gpa, 0x51abcu);
  auto blk = Translate(mem, Arm(tcr, 0x40000), (1ull << 36) + (4ull << 25) + 0x123456);
  ASSERT_TRUE(blk.ok() && blk->mapped);
  EXPECT_EQ(blk->page_size, 32u << 20);
  EXPECT_EQ(blk->gpa, 0x2123456u);
}

TEST(PagingArm64, SixtyFourKilobyteGranuleTwoLevels) {
  BufferMemory mem(1 << 20);
  const uint64_t tcr = 22 | (1ull << 14);  // 42-bit input, TG0 64K: levels 2..3
  mem.Put(0x60000 + 8 * 3, 0x70000 | kTbl);
  mem.Put(0x70000 + 8 * 5, 0x80000 | kPage);
  mem.Put(0x60000 + 8 * 1, 0x20000000 | kBlock);
  auto t = Translate(mem, Arm(tcr, 0x60000), (3ull << 29) + (5ull << 16) + 0xabcd);
  ASSERT_TRUE(t.ok()) << t.status().message();
  ASSERT_TRUE(t->mapped);
  EXPECT_EQ(t->mode, PagingMode::kArm64_64K);
  ASSERT_EQ(t->steps.size(), 2u);
  EXPECT_STREQ(t->steps[0].level, "L2");
  EXPECT_EQ(t->page_size, 65536u);
  EXPECT_EQ(t->gpa, 0x8abcdu);
  auto blk = Translate(mem, Arm(tcr, 0x60000), (1ull << 29) + 0x1234567);
  ASSERT_TRUE(blk.ok() && blk->mapped);
  EXPECT_EQ(blk->page_size, 512u << 20);
  EXPECT_EQ(blk->gpa, 0x21234567u);
}

TEST(PagingArm64, MmuOffIsIdentityAndRegistersComeFromTheManifest) {
  BufferMemory mem(1 << 16);
  PagingRegs off = Arm(0, 0);
  off.sctlr = 0;
  auto t = Translate(mem, off, 0x1234);
  ASSERT_TRUE(t.ok() && t->mapped);
  EXPECT_EQ(t->gpa, 0x1234u);
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  m.setArch(schema::Arch::AARCH64);
  auto sr = m.initVcpus(1)[0].initAarch64().initSysregs(2);
  sr[0].setId(0x603000000013c102ull);  // TCR_EL1
  sr[0].setValue(0x1234);
  sr[1].setId(0x603000000013c101ull);  // TTBR1_EL1
  sr[1].setValue(0x5000);
  auto r = PagingRegsOf(m.asReader(), 0);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->arm64);
  EXPECT_EQ(r->tcr, 0x1234u);
  EXPECT_EQ(r->ttbr1, 0x5000u);
}

}  // namespace
}  // namespace vmsnap::guest
