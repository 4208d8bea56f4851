// SPDX-License-Identifier: MIT
// The forensic tools' helpers and header builders, in-process: the page cache
// over guest memory, number parsing, and the ELF note and LiME headers.
#include <gtest/gtest.h>

#include <capnp/message.h>

#include <cstring>
#include <map>
#include <vector>

#include "tools/forensics/cli_util.h"
#include "tools/forensics/export.h"
#include "tests/guest/buffer_memory.h"

namespace vmsnap::forensics {
namespace {

using guest::testing::BufferMemory;

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
