// SPDX-License-Identifier: MIT
// A model of the s390 kernel's side of the CMMA, storage-key, migration-mode,
// TOD and vCPU register ioctls, behind the same interface as the real calls
// (kvm/s390x/s390.h). It follows Documentation/virt/kvm/api.rst and
// arch/s390/kvm/kvm-s390.c (kvm_s390_get_cmma_bits, kvm_s390_get_cmma,
// kvm_s390_peek_cmma, kvm_s390_next_dirty_cmma, kvm_s390_set_cmma_bits,
// kvm_s390_vm_start/stop_migration, kvm_s390_get/set_skeys) step by step, so
// capture/restore can be tested on hosts without s390 KVM.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tests/model/kernel/faults.h"
#include "kvm/s390x/s390.h"

namespace vmsnap::kvm::model {

class S390ModelVcpu;

class S390Model final : public s390::Vm {
 public:
  struct Slot {
    uint64_t base_gfn = 0;
    uint64_t npages = 0;
    bool log_dirty = true;           // KVM_MEM_LOG_DIRTY_PAGES: migration mode needs it
    std::vector<uint8_t> cmma;       // per page, (pgste >> 24) & 0x43
    std::vector<uint8_t> skeys;      // per page storage key
    std::vector<bool> cmma_dirty;    // the "second dirty bitmap" of the slot
  };

  // has_cmma: the host (SCLP) offers CMMA; use_cmma is still off until the VMM
  // sets KVM_S390_VM_MEM_ENABLE_CMMA.
  explicit S390Model(bool has_cmma = true);
  ~S390Model() override;

  // VMM setup: a memory slot (KVM_SET_USER_MEMORY_REGION). Slots must not overlap.
  void AddSlot(uint64_t base_gfn, uint64_t npages, bool log_dirty = true);
  // KVM_CREATE_VCPU. The model owns the vCPU.
  S390ModelVcpu& CreateVcpu();
  S390ModelVcpu& vcpu(size_t i) { return *vcpus_[i]; }
  size_t vcpu_count() const { return vcpus_.size(); }

  // What a running guest does.
  // ESSA: sets the page's usage state and NODAT bit; the guest now uses CMM;
  // in migration mode the page becomes dirty.
  void GuestSetCmma(uint64_t gfn, uint8_t value);
  // SSKE: the first key instruction enables storage keys for the guest.
  void GuestSetStorageKey(uint64_t gfn, uint8_t key);

  // Inspection, for tests.
  bool use_cmma() const { return use_cmma_; }
  bool uses_cmm() const { return uses_cmm_; }
  bool uses_skeys() const { return uses_skeys_; }
  bool migration_mode() const { return migration_mode_; }
  uint64_t cmma_dirty_pages() const { return cmma_dirty_pages_; }
  uint8_t cmma(uint64_t gfn) const;
  uint8_t skey(uint64_t gfn) const;
  bool cmma_dirty(uint64_t gfn) const;
  const std::vector<Slot>& slots() const { return slots_; }  // highest base_gfn first
  uint64_t tod_low() const { return tod_low_; }

  FaultPlan& faults() { return faults_; }
  UserMemory& user_memory() { return user_; }

  // s390::Vm
  int GetCmmaBits(s390::CmmaLog* log) override;
  int SetCmmaBits(const s390::CmmaLog& log) override;
  int GetSkeys(const s390::Skeys& args) override;
  int SetSkeys(const s390::Skeys& args) override;
  int SetAttr(const kvm_device_attr& attr) override;
  int GetAttr(const kvm_device_attr& attr) override;
  int HasAttr(const kvm_device_attr& attr) override;

 private:
  friend class S390ModelVcpu;
  Slot* SlotOf(uint64_t gfn);
  const Slot* SlotOf(uint64_t gfn) const;
  int SlotApprox(uint64_t gfn) const;
  uint64_t NextDirty(uint64_t cur_gfn) const;
  int PeekCmma(s390::CmmaLog* args, uint8_t* res, uint64_t bufsize);
  int GetCmma(s390::CmmaLog* args, uint8_t* res, uint64_t bufsize);
  int StartMigration();
  int SetMemCtrl(const kvm_device_attr& attr);
  int SetTod(const kvm_device_attr& attr);
  int GetTod(const kvm_device_attr& attr);
  bool Inject(const char* op, int* ret);

  bool has_cmma_;
  bool use_cmma_ = false;
  bool uses_cmm_ = false;     // mm->context.uses_cmm
  bool uses_skeys_ = false;   // mm_uses_skeys()
  bool migration_mode_ = false;
  uint64_t cmma_dirty_pages_ = 0;
  uint64_t tod_low_ = 0;
  std::vector<Slot> slots_;   // sorted by base_gfn, highest first, as the kernel's memslots
  std::vector<std::unique_ptr<S390ModelVcpu>> vcpus_;
  FaultPlan faults_;
  UserMemory user_;
};

class S390ModelVcpu final : public s390::Vcpu {
 public:
  explicit S390ModelVcpu(S390Model* vm) : vm_(vm) {}

  int GetRegs(s390::Regs* regs) override;
  int SetRegs(const s390::Regs& regs) override;
  int GetSregs(s390::Sregs* sregs) override;
  int SetSregs(const s390::Sregs& sregs) override;
  int GetFpu(s390::Fpu* fpu) override;
  int SetFpu(const s390::Fpu& fpu) override;
  int GetOneReg(const kvm_one_reg& reg) override;
  int SetOneReg(const kvm_one_reg& reg) override;
  int GetMpState(kvm_mp_state* state) override;
  int SetMpState(const kvm_mp_state& state) override;
  int GetPsw(uint64_t* mask, uint64_t* addr) override;
  int SetPsw(uint64_t mask, uint64_t addr) override;
  int GetPrefix(uint32_t* prefix) override;
  int SetPrefix(uint32_t prefix) override;

  // The whole register state, for tests to set up and compare.
  struct State {
    s390::Regs regs{};
    s390::Sregs sregs{};
    s390::Fpu fpu{};
    uint64_t psw_mask = 0, psw_addr = 0;
    uint32_t prefix = 0;
    uint32_t mp_state = s390::kMpStopped;
    uint32_t todpr = 0;
    uint64_t epoch_diff = 0, cpu_timer = 0, clock_comp = 0;
    uint64_t pft = 0, pfc = 0, pfs = 0, pp = 0, gbea = 0;
  };
  State& state() { return state_; }
  const State& state() const { return state_; }

 private:
  bool Inject(const char* op, int* ret) { return vm_->Inject(op, ret); }
  S390Model* vm_;
  State state_;
};

// Field-by-field equality of the register state, for tests.
bool operator==(const S390ModelVcpu::State& a, const S390ModelVcpu::State& b);

}  // namespace vmsnap::kvm::model
