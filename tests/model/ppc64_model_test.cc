// SPDX-License-Identifier: MIT
// The ppc64 kernel model pins each documented behaviour of KVM_PPC_GET_HTAB_FD
// (read passes, record layout and coalescing, bolted-only, write fds) and of
// the vCPU register calls.
#include "tests/model/kernel/ppc64_model.h"

#include <endian.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace vmsnap::kvm::model {
namespace {
namespace kp = ppc;

constexpr uint64_t kV = kp::kHpteVValid;

struct Record {
  kp::HtabHeader hdr;
  std::vector<std::pair<uint64_t, uint64_t>> hptes;  // decoded from big-endian
};

std::vector<Record> Parse(const std::vector<uint8_t>& buf, ssize_t n) {
  std::vector<Record> out;
  size_t off = 0;
  while (off < static_cast<size_t>(n)) {
    Record r;
    std::memcpy(&r.hdr, buf.data() + off, 8);
    off += 8;
    for (unsigned i = 0; i < r.hdr.n_valid; ++i) {
      uint64_t be[2];
      std::memcpy(be, buf.data() + off, 16);
      off += 16;
      r.hptes.push_back({be64toh(be[0]), be64toh(be[1])});
    }
    out.push_back(r);
  }
  return out;
}

std::unique_ptr<kp::HtabFile> Open(PpcModel& vm, uint64_t flags) {
  kp::HtabFdArgs args{};
  args.flags = flags;
  std::unique_ptr<kp::HtabFile> fd;
  EXPECT_EQ(vm.GetHtabFd(args, &fd), 0);
  return fd;
}

TEST(PpcModel, FirstPassReturnsAllEntriesThenZeroAtTheEnd) {
  PpcModel vm(18);  // 16384 entries
  vm.GuestEnter(0, kV | 0x1000, 0x2000);
  vm.GuestEnter(1, kV | 0x1100, 0x3000);
  vm.GuestEnter(5000, kV | kp::kHpteVBolted, 0x4000);
  auto fd = Open(vm, 0);
  std::vector<uint8_t> buf(1 << 16);
  ssize_t n = fd->Read(buf.data(), buf.size());
  ASSERT_GT(n, 0);
  auto recs = Parse(buf, n);
  // valid 0-1, invalid 2-4999; valid 5000, invalid to the end of the table.
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_EQ(recs[0].hdr.index, 0u);
  EXPECT_EQ(recs[0].hdr.n_valid, 2);
  EXPECT_EQ(recs[0].hdr.n_invalid, 4998);
  EXPECT_EQ(recs[1].hdr.index, 5000u);
  EXPECT_EQ(recs[1].hdr.n_valid, 1);
  EXPECT_EQ(recs[1].hdr.n_invalid, 16384 - 5001);
  // HPTEs are big-endian doublewords; the kernel reads them under the HPTE
  // lock, whose bit the stream carries.
  EXPECT_EQ(recs[0].hptes[1].first, kV | 0x1100 | kp::kHpteVHvlock);
  EXPECT_EQ(recs[0].hptes[1].second, 0x3000u);
  EXPECT_EQ(fd->Read(buf.data(), buf.size()), 0);  // nothing changed since
}

TEST(PpcModel, RunsAreCappedAt0xffff) {
  PpcModel vm(21);  // 131072 entries, all invalid
  auto fd = Open(vm, 0);
  std::vector<uint8_t> buf(4096);
  ssize_t n = fd->Read(buf.data(), buf.size());
  auto recs = Parse(buf, n);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].hdr.n_invalid, 0xffff);
  EXPECT_EQ(recs[1].hdr.index, 0xffffu);
  EXPECT_EQ(recs[1].hdr.n_invalid, 0xffff);
  EXPECT_EQ(recs[2].hdr.n_invalid, 131072 - 2 * 0xffff);
}

TEST(PpcModel, ReadsStopWhereTheBufferEndsAndResume) {
  PpcModel vm(18);
  for (uint64_t i = 0; i < 10; ++i) vm.GuestEnter(i, kV | (i << 7), i << 12);
  auto fd = Open(vm, 0);
  std::vector<uint8_t> buf(8 + 16 * 3 + 1);  // room for a header and 3 HPTEs
  ssize_t n = fd->Read(buf.data(), buf.size());
  auto recs = Parse(buf, n);
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].hdr.n_valid, 3);
  EXPECT_EQ(recs[0].hdr.n_invalid, 0);
  n = fd->Read(buf.data(), buf.size());
  recs = Parse(buf, n);
  EXPECT_EQ(recs[0].hdr.index, 3u);
  // 24 bytes or fewer can never hold a record: such a read returns 0.
  EXPECT_EQ(fd->Read(buf.data(), 24), 0);
}

TEST(PpcModel, BoltedOnlyReportsOtherEntriesAsInvalid) {
  PpcModel vm(18);
  vm.GuestEnter(0, kV | kp::kHpteVBolted, 0x1000);
  vm.GuestEnter(1, kV, 0x2000);
  vm.GuestEnter(2, kV | kp::kHpteVBolted, 0x3000);
  auto fd = Open(vm, kp::kHtabBoltedOnly);
  std::vector<uint8_t> buf(4096);
  auto recs = Parse(buf, fd->Read(buf.data(), buf.size()));
  ASSERT_GE(recs.size(), 2u);
  EXPECT_EQ(recs[0].hdr.n_valid, 1);
  EXPECT_EQ(recs[0].hdr.n_invalid, 1);  // entry 1 is valid but not bolted
  EXPECT_EQ(recs[1].hdr.index, 2u);
  EXPECT_EQ(recs[1].hdr.n_valid, 1);
}

TEST(PpcModel, LaterPassesReturnOnlyChangedEntries) {
  PpcModel vm(18);
  vm.GuestEnter(10, kV | 0x80, 0x1000);
  vm.GuestEnter(20, kV | 0x100, 0x2000);
  auto fd = Open(vm, 0);
  std::vector<uint8_t> buf(1 << 16);
  ASSERT_GT(fd->Read(buf.data(), buf.size()), 0);
  ASSERT_EQ(fd->Read(buf.data(), buf.size()), 0);

  vm.GuestEnter(30, kV | 0x180, 0x3000);
  vm.GuestRemove(10);
  vm.HardwareSetRc(20, kp::kHpteRC);  // the hardware dirtied the page
  auto recs = Parse(buf, fd->Read(buf.data(), buf.size()));
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].hdr.index, 10u);  // removed: an invalid run of 1
  EXPECT_EQ(recs[0].hdr.n_valid, 0);
  EXPECT_EQ(recs[0].hdr.n_invalid, 1);
  EXPECT_EQ(recs[1].hdr.index, 20u);  // R/C harvested into the guest view
  EXPECT_EQ(recs[1].hptes[0].second, 0x2000u | kp::kHpteRC);
  EXPECT_EQ(recs[2].hdr.index, 30u);
  EXPECT_EQ(recs[2].hdr.n_invalid, 0);
  EXPECT_EQ(fd->Read(buf.data(), buf.size()), 0);
}

TEST(PpcModel, ChangesAreTrackedOnlyWhileAReadFdIsOpen) {
  PpcModel vm(18);
  vm.GuestEnter(3, kV, 0x1000);  // no reader yet: not marked modified
  EXPECT_FALSE(vm.hpte(3).guest_rpte & kp::kHpteGrModified);
  {
    auto fd = Open(vm, 0);
    EXPECT_EQ(vm.open_read_fds(), 1);
    vm.GuestEnter(4, kV, 0x2000);
    EXPECT_TRUE(vm.hpte(4).guest_rpte & kp::kHpteGrModified);
  }
  EXPECT_EQ(vm.open_read_fds(), 0);
}

TEST(PpcModel, WriteFdCreatesAndInvalidatesEntries) {
  PpcModel vm(18);
  vm.GuestEnter(7, kV, 0x7000);
  auto fd = Open(vm, kp::kHtabWrite);
  std::vector<uint8_t> rec(8 + 32);
  kp::HtabHeader hdr{5, 2, 3};  // 5, 6 valid; 7, 8, 9 invalid
  std::memcpy(rec.data(), &hdr, 8);
  uint64_t be[4] = {htobe64(kV | 0x500 | kp::kHpteVHvlock), htobe64(0x5000), htobe64(kV | 0x600),
                    htobe64(0x6000)};
  std::memcpy(rec.data() + 8, be, 32);
  ASSERT_EQ(fd->Write(rec.data(), rec.size()), static_cast<ssize_t>(rec.size()));
  auto view = vm.GuestView();
  ASSERT_EQ(view.size(), 2u);
  EXPECT_EQ(view[5].first, kV | 0x500);  // the lock bit is not stored
  EXPECT_EQ(view[6].second, 0x6000u);
  EXPECT_EQ(view.count(7), 0u);

  // A record cut short is left unconsumed.
  EXPECT_EQ(fd->Write(rec.data(), rec.size() - 16), 0);
  hdr = {16383, 1, 1};  // runs past the end of the table
  std::memcpy(rec.data(), &hdr, 8);
  EXPECT_EQ(fd->Write(rec.data(), 8 + 16), -EINVAL);
  hdr = {0, 1, 0};
  std::memcpy(rec.data(), &hdr, 8);
  be[0] = htobe64(0x500);  // not valid
  std::memcpy(rec.data() + 8, be, 16);
  EXPECT_EQ(fd->Write(rec.data(), 8 + 16), -EINVAL);
  vm.set_vcpus_running(true);
  EXPECT_EQ(fd->Write(rec.data(), 8 + 16), -EBUSY);
  std::vector<uint8_t> buf(64);
  EXPECT_EQ(fd->Read(buf.data(), buf.size()), -EBADF);
}

TEST(PpcModel, GetHtabFdRejectsUnknownFlags) {
  PpcModel vm(18);
  kp::HtabFdArgs args{};
  args.flags = 0x4;
  std::unique_ptr<kp::HtabFile> fd;
  EXPECT_EQ(vm.GetHtabFd(args, &fd), -EINVAL);
  uint32_t order = 17;
  EXPECT_EQ(vm.AllocateHtab(&order), -EINVAL);
  order = 0;
  ASSERT_EQ(vm.AllocateHtab(&order), 0);
  EXPECT_EQ(order, 24u);  // the kernel's default
  EXPECT_EQ(vm.npte(), 1u << 20);
}

TEST(PpcModel, FaultInjection) {
  PpcModel vm(18);
  for (uint64_t i = 0; i < 4; ++i) vm.GuestEnter(i, kV, i << 12);
  auto fd = Open(vm, 0);
  std::vector<uint8_t> buf(4096);
  vm.faults().ArmErrno("read", EINTR);
  EXPECT_EQ(fd->Read(buf.data(), buf.size()), -EINTR);
  vm.faults().ArmShort("read", 8 + 16 * 2 + 1);
  auto recs = Parse(buf, fd->Read(buf.data(), buf.size()));
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].hdr.n_valid, 2);  // short read: the rest comes next time
  recs = Parse(buf, fd->Read(buf.data(), buf.size()));
  EXPECT_EQ(recs[0].hdr.index, 2u);
  vm.faults().ArmErrno("KVM_PPC_GET_HTAB_FD", ENOMEM);
  kp::HtabFdArgs args{};
  std::unique_ptr<kp::HtabFile> other;
  EXPECT_EQ(vm.GetHtabFd(args, &other), -ENOMEM);
  vm.user_memory().Restrict(buf.data(), 100);
  EXPECT_EQ(fd->Read(buf.data(), buf.size()), -EFAULT);
}

TEST(PpcModel, VcpuRegisters) {
  PpcModel vm(18);
  PpcModelVcpu& cpu = vm.CreateVcpu(0x004e1200);
  kp::Sregs s{};
  s.pvr = 0x004e1200;
  s.u.s.slb[0] = {0x1000 | kp::kSlbEsidValid, 0x400};
  s.u.s.slb[1] = {0x2000, 0x500};  // not valid: dropped
  s.u.s.slb[2] = {0x3000 | kp::kSlbEsidValid, 0x600};
  ASSERT_EQ(cpu.SetSregs(s), 0);
  kp::Sregs back{};
  ASSERT_EQ(cpu.GetSregs(&back), 0);
  EXPECT_EQ(back.u.s.slb[0].slbe, 0x1000 | kp::kSlbEsidValid);
  EXPECT_EQ(back.u.s.slb[1].slbe, 0x3000 | kp::kSlbEsidValid | 1);  // packed, slot number ORed in
  EXPECT_EQ(back.u.s.slb[2].slbe, 0u);
  s.pvr = 0x004b0201;  // another CPU model
  EXPECT_EQ(cpu.SetSregs(s), -EINVAL);
  uint64_t v = 0xabc;
  kvm_one_reg r{kp::kSprs[0].id, reinterpret_cast<uintptr_t>(&v)};
  ASSERT_EQ(cpu.SetOneReg(r), 0);
  v = 0;
  ASSERT_EQ(cpu.GetOneReg(r), 0);
  EXPECT_EQ(v, 0xabcu);
  r.id = KVM_REG_PPC | KVM_REG_SIZE_U64 | 0xfff;
  EXPECT_EQ(cpu.GetOneReg(r), -EINVAL);
  kvm_mp_state mp{};
  EXPECT_EQ(cpu.GetMpState(&mp), -EINVAL);  // POWER has none
}

}  // namespace
}  // namespace vmsnap::kvm::model
