// SPDX-License-Identifier: MIT
// The page walker and the header builders, in-process over memory held in a
// test buffer: every paging mode, page size and stop reason.
#include <gtest/gtest.h>

#include <capnp/message.h>

#include <cstring>
#include <map>
#include <vector>

#include "tools/forensics/cli_util.h"
#include "tools/forensics/export.h"
#include "tools/forensics/paging.h"

namespace vmsnap::forensics {
namespace {

// One region of guest memory at gpa 0.
class BufferMemory : public PhysicalMemory {
 public:
  explicit BufferMemory(uint64_t size) : bytes_(size), regions_{{0, size, "ram"}} {}
  const std::vector<Region>& regions() const override { return regions_; }
  Status Read(uint64_t gpa, uint64_t len, uint8_t* out) const override {
    VMSNAP_RETURN_IF_ERROR(CheckInside(regions_, gpa, len));
    std::memcpy(out, bytes_.data() + gpa, len);
    ++reads;
    return Status::Ok();
  }
  void Put(uint64_t gpa, uint64_t v, unsigned n = 8) {
    for (unsigned i = 0; i < n; ++i) bytes_[gpa + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  mutable int reads = 0;

 private:
  std::vector<uint8_t> bytes_;
  std::vector<Region> regions_;
};

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

TEST(PageCache, ServesRepeatedEntryReadsFromOnePageRead) {
  BufferMemory mem(1 << 20);
  mem.Put(0x1008, 0x1122334455667788ull);
  PageCache cache(mem);
  uint8_t b[8];
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(cache.Read(0x1008, 8, b).ok());
  EXPECT_EQ(mem.reads, 1);
  EXPECT_EQ(b[0], 0x88);
}

TEST(ParseNumber, HexDecimalAndSuffixes) {
  EXPECT_EQ(ParseNumber("0x1000", "x").value(), 0x1000u);
  EXPECT_EQ(ParseNumber("4096", "x").value(), 4096u);
  EXPECT_EQ(ParseNumber("2M", "x", true).value(), 2u << 20);
  EXPECT_EQ(ParseNumber("0xffff_8000_0000_0000", "x").value(), 0xffff800000000000ull);
  EXPECT_FALSE(ParseNumber("12abc", "x").ok());
  EXPECT_FALSE(ParseNumber("0x1ffffffffffffffff", "x").ok());
  EXPECT_FALSE(ParseNumber("2M", "x", false).ok());
}

uint64_t Le64(const std::vector<uint8_t>& b, size_t off) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{b[off + i]} << (8 * i);
  return v;
}

TEST(Headers, PrstatusHasUserRegsInGdbOrder) {
  capnp::MallocMessageBuilder msg;
  auto v = msg.initRoot<schema::x86::Vcpu>();
  auto r = v.initRegs();
  r.setR15(15);
  r.setRax(0xaa);
  r.setRip(0x1234);
  r.setRsp(0x8000);
  r.setRflags(0x202);
  auto s = v.initSregs();
  s.initCs().setSelector(0x08);
  s.initSs().setSelector(0x10);
  s.initFs().setBase(0xf5);
  s.initGs().setBase(0x65);
  auto b = X86Prstatus(v.asReader(), 2);
  ASSERT_EQ(b.size(), 336u);
  EXPECT_EQ(b[32], 3);                      // pr_pid = index + 1
  constexpr size_t kReg = 112;              // offsetof(elf_prstatus, pr_reg)
  EXPECT_EQ(Le64(b, kReg + 0 * 8), 15u);    // r15
  EXPECT_EQ(Le64(b, kReg + 10 * 8), 0xaau); // rax
  EXPECT_EQ(Le64(b, kReg + 15 * 8), ~0ull); // orig_rax
  EXPECT_EQ(Le64(b, kReg + 16 * 8), 0x1234u);  // rip
  EXPECT_EQ(Le64(b, kReg + 17 * 8), 0x08u);    // cs
  EXPECT_EQ(Le64(b, kReg + 18 * 8), 0x202u);   // eflags
  EXPECT_EQ(Le64(b, kReg + 19 * 8), 0x8000u);  // rsp
  EXPECT_EQ(Le64(b, kReg + 20 * 8), 0x10u);    // ss
  EXPECT_EQ(Le64(b, kReg + 21 * 8), 0xf5u);    // fs_base
  EXPECT_EQ(Le64(b, kReg + 22 * 8), 0x65u);    // gs_base
}

uint32_t Le32(const std::vector<uint8_t>& b, size_t off) { return static_cast<uint32_t>(Le64(b, off)); }

TEST(Headers, QemuNoteHasQemuCpuStateLayout) {
  capnp::MallocMessageBuilder msg;
  auto v = msg.initRoot<schema::x86::Vcpu>();
  auto r = v.initRegs();
  r.setRax(0xaa);
  r.setRbp(0xbb);
  r.setR15(0x15);
  r.setRip(0xffffffff81000000);
  r.setRflags(0x246);
  auto s = v.initSregs();
  auto cs = s.initCs();
  cs.setSelector(0x10);
  cs.setLimit(0xffffffff);
  cs.setType(0xb);
  cs.setS(1);
  cs.setPresent(1);
  cs.setL(1);
  cs.setG(1);
  s.initGs().setBase(0xffff888000000000);
  auto tr = s.initTr();
  tr.setSelector(0x40);
  tr.setPresent(1);
  tr.setUnusable(1);  // an unusable segment is not present for QEMU
  s.initIdt().setBase(0xfffffe0000000000);
  s.getIdt().setLimit(0xfff);
  s.setCr0(0x80050033);
  s.setCr3(0x2a72000);
  s.setCr4(0x751eb0);
  auto msrs = v.initMsrs(1);
  msrs[0].setIndex(0xc0000102);
  msrs[0].setValue(0x1234000);
  auto b = X86QemuCpuState(v.asReader());
  ASSERT_EQ(b.size(), 440u);
  EXPECT_EQ(Le32(b, 0), 1u);                       // version
  EXPECT_EQ(Le32(b, 4), 440u);                     // size
  EXPECT_EQ(Le64(b, 8), 0xaau);                    // rax
  EXPECT_EQ(Le64(b, 8 + 7 * 8), 0xbbu);            // rbp, after rsp
  EXPECT_EQ(Le64(b, 8 + 15 * 8), 0x15u);           // r15
  EXPECT_EQ(Le64(b, 8 + 16 * 8), 0xffffffff81000000u);  // rip
  EXPECT_EQ(Le64(b, 8 + 17 * 8), 0x246u);          // rflags
  constexpr size_t kSeg = 152, kSegSize = 24;      // cs ds es fs gs ss ldt tr gdt idt
  EXPECT_EQ(Le32(b, kSeg), 0x10u);                 // cs.selector
  EXPECT_EQ(Le32(b, kSeg + 4), 0xffffffffu);       // cs.limit
  EXPECT_EQ(Le32(b, kSeg + 8), 0x00a09b00u);       // cs.flags: G L P S type 0xb
  EXPECT_EQ(Le64(b, kSeg + 4 * kSegSize + 16), 0xffff888000000000u);  // gs.base
  EXPECT_EQ(Le32(b, kSeg + 7 * kSegSize + 8), 0u);                   // tr: unusable
  EXPECT_EQ(Le32(b, kSeg + 9 * kSegSize + 4), 0xfffu);               // idt.limit
  EXPECT_EQ(Le64(b, kSeg + 9 * kSegSize + 16), 0xfffffe0000000000u);  // idt.base
  constexpr size_t kCr = kSeg + 10 * kSegSize;
  EXPECT_EQ(Le64(b, kCr), 0x80050033u);            // cr0
  EXPECT_EQ(Le64(b, kCr + 3 * 8), 0x2a72000u);     // cr3
  EXPECT_EQ(Le64(b, kCr + 4 * 8), 0x751eb0u);      // cr4
  EXPECT_EQ(Le64(b, kCr + 5 * 8), 0x1234000u);     // kernel_gs_base
}

TEST(Headers, XstateNoteCarriesXcr0WhereGdbReadsIt) {
  capnp::MallocMessageBuilder msg;
  auto v = msg.initRoot<schema::x86::Vcpu>();
  std::vector<uint8_t> area(4096, 0);
  area[24] = 0x80;  // mxcsr 0x1f80, left as it was
  area[25] = 0x1f;
  v.setXsave(capnp::Data::Reader(area.data(), area.size()));
  auto xcrs = v.initXcrs(1);
  xcrs[0].setXcr(0);
  xcrs[0].setValue(0x207);
  auto b = X86Xstate(v.asReader());
  ASSERT_EQ(b.size(), 4096u);
  EXPECT_EQ(Le64(b, 464), 0x207u);
  EXPECT_EQ(b[24], 0x80);
  EXPECT_EQ(b[25], 0x1f);
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

// struct elf_prstatus on arm64: the same 112-byte head, then user_pt_regs.
TEST(Headers, Arm64PrstatusLayout) {
  capnp::MallocMessageBuilder msg;
  auto v = msg.initRoot<schema::aarch64::Vcpu>();
  auto c = v.initCore();
  auto x = c.initX(31);
  for (unsigned i = 0; i < 31; ++i) x.set(i, 0x100 + i);
  c.setSpEl0(0xe0);
  c.setSpEl1(0xe1);
  c.setPc(0xffff800008001234ull);
  c.setPstate(0x3c5);  // EL1h: the stack pointer in use is SP_EL1
  auto b = Arm64Prstatus(v.asReader(), 0);
  ASSERT_EQ(b.size(), 392u);
  EXPECT_EQ(b[32], 1);
  constexpr size_t kReg = 112;
  EXPECT_EQ(Le64(b, kReg), 0x100u);            // x0
  EXPECT_EQ(Le64(b, kReg + 30 * 8), 0x11eu);   // x30
  EXPECT_EQ(Le64(b, kReg + 31 * 8), 0xe1u);    // sp
  EXPECT_EQ(Le64(b, kReg + 32 * 8), 0xffff800008001234ull);  // pc
  EXPECT_EQ(Le64(b, kReg + 33 * 8), 0x3c5u);   // pstate
  c.setPstate(0x3c4);  // EL1t: SP_EL0
  EXPECT_EQ(Le64(Arm64Prstatus(v.asReader(), 0), kReg + 31 * 8), 0xe0u);
}

TEST(Headers, LimeHeaderBytes) {
  auto b = LimeHeader(0x100000, 0x1fffff);
  ASSERT_EQ(b.size(), 32u);
  const uint8_t magic[] = {0x45, 0x4d, 0x69, 0x4c, 1, 0, 0, 0};
  EXPECT_EQ(std::memcmp(b.data(), magic, 8), 0);
  EXPECT_EQ(Le64(b, 8), 0x100000u);
  EXPECT_EQ(Le64(b, 16), 0x1fffffu);
  EXPECT_EQ(Le64(b, 24), 0u);
}

}  // namespace
}  // namespace vmsnap::forensics
