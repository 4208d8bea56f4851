// SPDX-License-Identifier: MIT
// The s390 kernel model pins each documented behaviour of KVM_S390_GET/SET_CMMA_BITS,
// migration mode, KVM_S390_GET/SET_SKEYS and the vCPU register calls.
#include "tests/model/kernel/s390_model.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace vmsnap::kvm::model {
namespace {
namespace ks = s390;

// A VM with CMMA on and one slot of `pages` pages at gfn 0.
struct Fixture {
  explicit Fixture(uint64_t pages = 256) {
    vm.AddSlot(0, pages);
    kvm_device_attr a{};
    a.group = ks::kVmMemCtrl;
    a.attr = ks::kVmMemEnableCmma;
    EXPECT_EQ(vm.SetAttr(a), 0);
  }
  int Migration(uint64_t which) {
    kvm_device_attr a{};
    a.group = ks::kVmMigration;
    a.attr = which;
    return vm.SetAttr(a);
  }
  int Get(uint64_t start, uint32_t count, uint32_t flags, ks::CmmaLog* out) {
    buf.assign(count > (1u << 21) ? (1u << 21) : count, 0xee);
    *out = {};
    out->start_gfn = start;
    out->count = count;
    out->flags = flags;
    out->values = reinterpret_cast<uintptr_t>(buf.data());
    return vm.GetCmmaBits(out);
  }
  S390Model vm;
  std::vector<uint8_t> buf;
};

TEST(S390Model, MigrationGetReturnsDirtyValuesFromFirstDirtyPageAndUpdatesStartAndCount) {
  Fixture f;
  f.vm.GuestSetCmma(40, 0x03);  // before migration: not tracked
  ASSERT_EQ(f.Migration(ks::kVmMigrationStart), 0);
  ks::CmmaLog log;
  // Drain the START pass; everything is dirty after START.
  ASSERT_EQ(f.Get(0, 1000, 0, &log), 0);
  EXPECT_EQ(log.start_gfn, 0u);
  EXPECT_EQ(log.count, 256u);
  EXPECT_EQ(f.buf[40], 0x03);
  EXPECT_EQ(log.remaining, 0u);

  f.vm.GuestSetCmma(100, 0x01);
  f.vm.GuestSetCmma(103, 0x43);
  ASSERT_EQ(f.Get(10, 1000, 0, &log), 0);
  EXPECT_EQ(log.start_gfn, 100u);  // the first dirty page at or after 10
  EXPECT_EQ(log.count, 4u);        // 100..103; nothing dirty after 103
  EXPECT_EQ(f.buf[0], 0x01);
  EXPECT_EQ(f.buf[1], 0x00);
  EXPECT_EQ(f.buf[3], 0x43);
}

TEST(S390Model, MigrationGetStopsAfterMoreThanSixteenCleanValues) {
  Fixture f;
  f.vm.GuestSetCmma(0, 0);  // the guest uses CMM
  ASSERT_EQ(f.Migration(ks::kVmMigrationStart), 0);
  ks::CmmaLog log;
  ASSERT_EQ(f.Get(0, 1000, 0, &log), 0);  // drain
  f.vm.GuestSetCmma(10, 1);
  f.vm.GuestSetCmma(26, 1);  // 15 clean pages between: same block
  f.vm.GuestSetCmma(60, 1);  // 33 clean pages after 26: a new block
  ASSERT_EQ(f.Get(0, 1000, 0, &log), 0);
  EXPECT_EQ(log.start_gfn, 10u);
  // 10..26, plus one clean value: the kernel stores the value at a gfn before
  // it checks the distance to the next dirty one.
  EXPECT_EQ(log.count, 18u);
  EXPECT_EQ(log.remaining, 1u);
  ASSERT_EQ(f.Get(log.start_gfn + log.count, 1000, 0, &log), 0);
  EXPECT_EQ(log.start_gfn, 60u);
  EXPECT_EQ(log.count, 1u);
  EXPECT_EQ(log.remaining, 0u);
}

TEST(S390Model, MigrationGetReportsRemainingAndClearsWhatItReturned) {
  Fixture f;
  ASSERT_EQ(f.Migration(ks::kVmMigrationStart), 0);
  EXPECT_EQ(f.vm.cmma_dirty_pages(), 256u);
  ks::CmmaLog log;
  // A guest that never used CMM has no values to report: all zero, nothing cleared.
  ASSERT_EQ(f.Get(0, 100, 0, &log), 0);
  EXPECT_EQ(log.count, 0u);
  EXPECT_TRUE(f.vm.cmma_dirty(0));
  f.vm.GuestSetCmma(0, 0);
  ASSERT_EQ(f.Get(0, 100, 0, &log), 0);
  EXPECT_EQ(log.count, 100u);
  EXPECT_EQ(log.remaining, 156u);
  EXPECT_FALSE(f.vm.cmma_dirty(99));
  EXPECT_TRUE(f.vm.cmma_dirty(100));
  // With nothing dirty the kernel zeroes the whole struct.
  ASSERT_EQ(f.Get(100, 1000, 0, &log), 0);
  ASSERT_EQ(f.Get(0, 1000, 0, &log), 0);
  EXPECT_EQ(log.count, 0u);
  EXPECT_EQ(log.remaining, 0u);
  EXPECT_EQ(log.values, 0u);
}

TEST(S390Model, PeekReadsWithoutSideEffectsAlsoOutsideMigrationMode) {
  Fixture f;
  f.vm.GuestSetCmma(5, 0x40);
  ks::CmmaLog log;
  ASSERT_EQ(f.Get(3, 4, ks::kCmmaPeek, &log), 0);  // not migrating
  EXPECT_EQ(log.start_gfn, 3u);
  EXPECT_EQ(log.count, 4u);
  EXPECT_EQ(f.buf[2], 0x40);
  EXPECT_EQ(log.remaining, 0u);
  ASSERT_EQ(f.Migration(ks::kVmMigrationStart), 0);
  ASSERT_EQ(f.Get(0, 256, ks::kCmmaPeek, &log), 0);
  EXPECT_EQ(log.count, 256u);
  EXPECT_EQ(log.remaining, 256u);  // nothing was cleared
  EXPECT_TRUE(f.vm.cmma_dirty(0));
  // Peek past the end of memory: partial when it starts inside, EFAULT outside.
  ASSERT_EQ(f.Get(250, 20, ks::kCmmaPeek, &log), 0);
  EXPECT_EQ(log.count, 6u);
  EXPECT_EQ(f.Get(300, 20, ks::kCmmaPeek, &log), -EFAULT);
}

TEST(S390Model, CountAboveMaximumIsClamped) {
  Fixture f(ks::kCmmaSizeMax + 100);
  f.vm.GuestSetCmma(0, 1);
  ks::CmmaLog log;
  ASSERT_EQ(f.Get(0, 0xffffffffu, ks::kCmmaPeek, &log), 0);
  EXPECT_EQ(log.count, ks::kCmmaSizeMax);
}

TEST(S390Model, GetErrors) {
  ks::CmmaLog log;
  {
    S390Model off;  // CMMA never enabled
    off.AddSlot(0, 16);
    std::vector<uint8_t> b(16);
    log = {};
    log.count = 16;
    log.flags = ks::kCmmaPeek;
    log.values = reinterpret_cast<uintptr_t>(b.data());
    EXPECT_EQ(off.GetCmmaBits(&log), -ENXIO);
  }
  Fixture f;
  f.vm.GuestSetCmma(0, 1);
  EXPECT_EQ(f.Get(0, 16, 0, &log), -EINVAL);        // no peek, not migrating
  EXPECT_EQ(f.Get(0, 16, 0x2, &log), -EINVAL);      // unknown flag
  EXPECT_EQ(f.Get(0, 16, ks::kCmmaPeek | 0x80, &log), -EINVAL);
  log = {};
  log.count = 16;
  log.flags = ks::kCmmaPeek;
  log.values = 0;  // bad buffer
  EXPECT_EQ(f.vm.GetCmmaBits(&log), -EFAULT);
  std::vector<uint8_t> small(8);
  f.vm.user_memory().Restrict(small.data(), small.size());
  log.values = reinterpret_cast<uintptr_t>(small.data());
  log.count = 16;  // more than the buffer holds
  EXPECT_EQ(f.vm.GetCmmaBits(&log), -EFAULT);
  log.count = 8;
  log.start_gfn = 0;
  EXPECT_EQ(f.vm.GetCmmaBits(&log), 0);
}

TEST(S390Model, SetCmmaBitsAppliesMaskInPgstePositions) {
  Fixture f;
  std::vector<uint8_t> v = {0x43, 0x43, 0x43};
  ks::CmmaLog log{};
  log.start_gfn = 7;
  log.count = 3;
  log.mask = ~0ull;
  log.values = reinterpret_cast<uintptr_t>(v.data());
  ASSERT_EQ(f.vm.SetCmmaBits(log), 0);
  EXPECT_EQ(f.vm.cmma(7), 0x43);
  EXPECT_TRUE(f.vm.uses_cmm());
  // Only the usage bits (PGSTE bits 24-25) selected: NODAT stays.
  v = {0x00, 0x00, 0x00};
  log.mask = 0x03000000ull;
  ASSERT_EQ(f.vm.SetCmmaBits(log), 0);
  EXPECT_EQ(f.vm.cmma(8), 0x40);
  // A mask in value positions (0x43) selects nothing the kernel honours.
  v = {0x03, 0x03, 0x03};
  log.mask = 0x43;
  ASSERT_EQ(f.vm.SetCmmaBits(log), 0);
  EXPECT_EQ(f.vm.cmma(9), 0x40);
  // Bits outside usage/NODAT are never stored.
  v = {0xff, 0xff, 0xff};
  log.mask = ~0ull;
  ASSERT_EQ(f.vm.SetCmmaBits(log), 0);
  EXPECT_EQ(f.vm.cmma(7), 0x43);

  log.flags = 1;
  EXPECT_EQ(f.vm.SetCmmaBits(log), -EINVAL);
  log.flags = 0;
  log.count = ks::kCmmaSizeMax + 1;
  EXPECT_EQ(f.vm.SetCmmaBits(log), -EINVAL);
  log.count = 3;
  log.start_gfn = 255;  // runs past the end of memory
  EXPECT_EQ(f.vm.SetCmmaBits(log), -EFAULT);
  EXPECT_EQ(f.vm.cmma(255), 0x43);  // what came before the bad gfn was set
}

TEST(S390Model, MigrationModeSwitchedWithVmAttribute) {
  Fixture f(64);
  f.vm.GuestSetCmma(1, 1);
  uint64_t status = 7;
  kvm_device_attr a{};
  a.group = ks::kVmMigration;
  a.attr = ks::kVmMigrationStatus;
  a.addr = reinterpret_cast<uintptr_t>(&status);
  ASSERT_EQ(f.vm.GetAttr(a), 0);
  EXPECT_EQ(status, 0u);
  ASSERT_EQ(f.Migration(ks::kVmMigrationStart), 0);
  ASSERT_EQ(f.vm.GetAttr(a), 0);
  EXPECT_EQ(status, 1u);
  EXPECT_EQ(f.vm.cmma_dirty_pages(), 64u);  // START marks every page dirty
  ASSERT_EQ(f.Migration(ks::kVmMigrationStop), 0);
  ks::CmmaLog log;
  EXPECT_EQ(f.Get(0, 64, 0, &log), -EINVAL);  // STOP: dirty reads refused again
  ASSERT_EQ(f.Get(0, 64, ks::kCmmaPeek, &log), 0);
  EXPECT_EQ(log.remaining, 0u);
  EXPECT_EQ(f.Migration(99), -ENXIO);
  // Migration mode needs dirty logging on every slot.
  S390Model nolog;
  nolog.AddSlot(0, 8, /*log_dirty=*/false);
  kvm_device_attr e{};
  e.group = ks::kVmMemCtrl;
  e.attr = ks::kVmMemEnableCmma;
  ASSERT_EQ(nolog.SetAttr(e), 0);
  e.group = ks::kVmMigration;
  e.attr = ks::kVmMigrationStart;
  EXPECT_EQ(nolog.SetAttr(e), -EINVAL);
}

TEST(S390Model, GuestChangesMarkPagesDirtyOnlyInMigrationMode) {
  Fixture f(64);
  f.vm.GuestSetCmma(5, 1);
  EXPECT_FALSE(f.vm.cmma_dirty(5));
  ASSERT_EQ(f.Migration(ks::kVmMigrationStart), 0);
  ks::CmmaLog log;
  ASSERT_EQ(f.Get(0, 64, 0, &log), 0);
  EXPECT_EQ(f.vm.cmma_dirty_pages(), 0u);
  f.vm.GuestSetCmma(9, 3);
  f.vm.GuestSetCmma(9, 2);  // counted once
  EXPECT_EQ(f.vm.cmma_dirty_pages(), 1u);
  ASSERT_EQ(f.Get(0, 64, 0, &log), 0);
  EXPECT_EQ(log.start_gfn, 9u);
  EXPECT_EQ(log.count, 1u);
  EXPECT_EQ(f.buf[0], 2);
}

TEST(S390Model, CmmaEnableRefusedAfterVcpusExist) {
  S390Model vm;
  vm.AddSlot(0, 8);
  vm.CreateVcpu();
  kvm_device_attr a{};
  a.group = ks::kVmMemCtrl;
  a.attr = ks::kVmMemEnableCmma;
  EXPECT_EQ(vm.SetAttr(a), -EBUSY);
  S390Model nocmma(/*has_cmma=*/false);
  EXPECT_EQ(nocmma.SetAttr(a), -ENXIO);
}

TEST(S390Model, StorageKeys) {
  S390Model vm;
  vm.AddSlot(0, 32);
  std::vector<uint8_t> keys(8, 0xaa);
  ks::Skeys args{};
  args.start_gfn = 0;
  args.count = 8;
  args.skeydata_addr = reinterpret_cast<uintptr_t>(keys.data());
  EXPECT_EQ(vm.GetSkeys(args), ks::kGetSkeysNone);  // the guest never used keys
  args.flags = 1;
  EXPECT_EQ(vm.GetSkeys(args), -EINVAL);  // flags are checked before NONE
  args.flags = 0;
  vm.GuestSetStorageKey(3, 0x36);
  ASSERT_EQ(vm.GetSkeys(args), 0);
  EXPECT_EQ(keys[3], 0x36);
  EXPECT_EQ(keys[4], 0x00);

  keys.assign(8, 0x10);
  args.start_gfn = 20;
  ASSERT_EQ(vm.SetSkeys(args), 0);
  EXPECT_EQ(vm.skey(27), 0x10);
  args.count = 0;
  EXPECT_EQ(vm.GetSkeys(args), -EINVAL);
  EXPECT_EQ(vm.SetSkeys(args), -EINVAL);
  args.count = ks::kSkeysMax + 1;
  EXPECT_EQ(vm.GetSkeys(args), -EINVAL);
  args.count = 8;
  args.start_gfn = 28;  // 28..35: past the end of memory
  EXPECT_EQ(vm.GetSkeys(args), -EFAULT);
  EXPECT_EQ(vm.SetSkeys(args), -EFAULT);
  EXPECT_EQ(vm.skey(31), 0x10);  // keys before the bad gfn were set
  keys[0] = 0x11;                // reserved low bit
  args.start_gfn = 0;
  EXPECT_EQ(vm.SetSkeys(args), -EINVAL);
  args.skeydata_addr = 0;
  EXPECT_EQ(vm.SetSkeys(args), -EFAULT);
  // SET_SKEYS alone enables keys: a fresh guest answers keys afterwards.
  S390Model fresh;
  fresh.AddSlot(0, 8);
  keys.assign(8, 0x20);
  ks::Skeys set{};
  set.count = 8;
  set.skeydata_addr = reinterpret_cast<uintptr_t>(keys.data());
  ASSERT_EQ(fresh.SetSkeys(set), 0);
  EXPECT_EQ(fresh.GetSkeys(set), 0);
}

TEST(S390Model, FaultInjection) {
  Fixture f(16);
  f.vm.GuestSetCmma(0, 1);
  ks::CmmaLog log;
  f.vm.faults().ArmErrno("KVM_S390_GET_CMMA_BITS", EINTR, /*skip=*/1);
  EXPECT_EQ(f.Get(0, 4, ks::kCmmaPeek, &log), 0);
  EXPECT_EQ(f.Get(0, 4, ks::kCmmaPeek, &log), -EINTR);
  EXPECT_EQ(f.Get(0, 4, ks::kCmmaPeek, &log), 0);
  f.vm.faults().ArmErrno("vmalloc", ENOMEM);
  EXPECT_EQ(f.Get(0, 4, ks::kCmmaPeek, &log), -ENOMEM);
  f.vm.faults().ArmErrno("KVM_S390_GET_SKEYS", EFAULT);
  ks::Skeys args{};
  EXPECT_EQ(f.vm.GetSkeys(args), -EFAULT);
  f.vm.faults().ArmErrno("KVM_GET_REGS", EINTR);
  ks::Regs regs;
  EXPECT_EQ(f.vm.CreateVcpu().GetRegs(&regs), -EINTR);
}

TEST(S390Model, VcpuRegisterStorage) {
  S390Model vm;
  S390ModelVcpu& cpu = vm.CreateVcpu();
  ks::Regs regs{};
  regs.gprs[15] = 0x1234;
  ASSERT_EQ(cpu.SetRegs(regs), 0);
  ks::Regs back{};
  ASSERT_EQ(cpu.GetRegs(&back), 0);
  EXPECT_EQ(back.gprs[15], 0x1234u);
  uint64_t t = 0x77;
  kvm_one_reg r{ks::kRegCpuTimer, reinterpret_cast<uintptr_t>(&t)};
  ASSERT_EQ(cpu.SetOneReg(r), 0);
  t = 0;
  ASSERT_EQ(cpu.GetOneReg(r), 0);
  EXPECT_EQ(t, 0x77u);
  r.id = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x55;
  EXPECT_EQ(cpu.GetOneReg(r), -EINVAL);
  ASSERT_EQ(cpu.SetPrefix(0x12345fff), 0);
  uint32_t prefix = 0;
  ASSERT_EQ(cpu.GetPrefix(&prefix), 0);
  EXPECT_EQ(prefix, 0x12344000u);  // 8 KiB aligned
  kvm_mp_state mp{ks::kMpOperating};
  EXPECT_EQ(cpu.SetMpState(mp), 0);
  mp.mp_state = ks::kMpLoad;  // only for protected guests
  EXPECT_EQ(cpu.SetMpState(mp), -ENXIO);
  mp.mp_state = ks::kMpCheckStop;
  EXPECT_EQ(cpu.SetMpState(mp), -ENXIO);
}

}  // namespace
}  // namespace vmsnap::kvm::model
