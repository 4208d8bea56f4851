// SPDX-License-Identifier: MIT
// A model of the book3s HV kernel's side of KVM_PPC_GET_HTAB_FD (read and
// write fds), KVM_PPC_ALLOCATE_HTAB and the vCPU register calls, behind the
// same interface as the real calls (kvm/ppc64/ppc64.h). It follows
// Documentation/virt/kvm/api.rst and arch/powerpc/kvm/book3s_64_mmu_hv.c
// (kvm_vm_ioctl_get_htab_fd, kvm_htab_read, record_hpte, hpte_dirty,
// kvm_htab_write) and book3s_hv.c (sregs, ONE_REG) step by step.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "tests/model/kernel/faults.h"
#include "kvm/ppc64/ppc64.h"

namespace vmsnap::kvm::model {

class PpcModelVcpu;

class PpcModel final : public ppc::Vm {
 public:
  // One HPT slot as the kernel keeps it: the hardware HPTE (v, and r with the
  // R/C bits the hardware sets) and the guest view of r (revmap guest_rpte)
  // that carries HPTE_GR_MODIFIED.
  struct Hpte {
    uint64_t v = 0;
    uint64_t hr = 0;
    uint64_t guest_rpte = 0;
  };

  // An HPT of 2^order bytes (order 18: 16384 entries).
  explicit PpcModel(uint32_t order = 18);
  ~PpcModel() override;

  PpcModelVcpu& CreateVcpu(uint32_t pvr = 0x004e1200);  // POWER9 DD2.0
  PpcModelVcpu& vcpu(size_t i) { return *vcpus_[i]; }
  size_t vcpu_count() const { return vcpus_.size(); }
  // vCPUs inside KVM_RUN: a write fd refuses to change the HPT (EBUSY).
  void set_vcpus_running(bool running) { vcpus_running_ = running; }

  // What the guest does (hcalls) and what the hardware does.
  // H_ENTER with H_EXACT: v must have HPTE_V_VALID (or HPTE_V_ABSENT).
  void GuestEnter(uint64_t index, uint64_t v, uint64_t r);
  void GuestRemove(uint64_t index);      // H_REMOVE
  void HardwareSetRc(uint64_t index, uint64_t rc_bits);  // the MMU sets R/C in the HPTE

  uint64_t npte() const { return hpt_.size(); }
  uint32_t order() const { return order_; }
  const Hpte& hpte(uint64_t index) const { return hpt_[index]; }
  // The guest's view of the table: valid entries by index, (v, r) as a read
  // fd reports them (r without HPTE_GR_MODIFIED).
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> GuestView() const;
  int open_read_fds() const { return hpte_mod_interest_; }

  FaultPlan& faults() { return faults_; }
  UserMemory& user_memory() { return user_; }

  // ppc::Vm
  int GetHtabFd(const ppc::HtabFdArgs& args, std::unique_ptr<ppc::HtabFile>* out) override;
  int AllocateHtab(uint32_t* order) override;

 private:
  friend class PpcModelVcpu;
  friend class HtabCtx;
  bool Inject(const char* op, Fault* f);
  void NoteModification(Hpte& e) {
    if (hpte_mod_interest_ > 0) e.guest_rpte |= ppc::kHpteGrModified;
  }
  bool HpteDirty(const Hpte& e) const;
  int RecordHpte(uint64_t flags, Hpte& e, uint64_t out[2], bool want_valid, bool first_pass);
  ssize_t HtabRead(struct HtabState& ctx, uint8_t* buf, size_t count);
  ssize_t HtabWrite(const uint8_t* buf, size_t count);

  uint32_t order_;
  std::vector<Hpte> hpt_;
  int hpte_mod_interest_ = 0;  // open read fds; entries are marked modified only while > 0
  bool vcpus_running_ = false;
  std::vector<std::unique_ptr<PpcModelVcpu>> vcpus_;
  FaultPlan faults_;
  UserMemory user_;
};

class PpcModelVcpu final : public ppc::Vcpu {
 public:
  PpcModelVcpu(PpcModel* vm, uint32_t pvr) : vm_(vm), pvr_(pvr) {}

  int GetRegs(ppc::Regs* regs) override;
  int SetRegs(const ppc::Regs& regs) override;
  int GetSregs(ppc::Sregs* sregs) override;
  int SetSregs(const ppc::Sregs& sregs) override;
  int GetOneReg(const kvm_one_reg& reg) override;
  int SetOneReg(const kvm_one_reg& reg) override;
  int GetMpState(kvm_mp_state* state) override;
  int SetMpState(const kvm_mp_state& state) override;

  // Storage, for tests to set up and compare.
  struct State {
    ppc::Regs regs{};
    uint64_t sdr1 = 0;
    std::vector<ppc::SlbEntry> slb;  // arch.slb[0..slb_max): the valid entries, in order
    std::map<uint64_t, std::vector<uint8_t>> one_regs;  // id -> bytes (host order)
  };
  State& state() { return state_; }
  const State& state() const { return state_; }
  uint32_t pvr() const { return pvr_; }

 private:
  bool Inject(const char* op, int* ret);
  PpcModel* vm_;
  uint32_t pvr_;
  State state_;
};

bool operator==(const PpcModelVcpu::State& a, const PpcModelVcpu::State& b);

}  // namespace vmsnap::kvm::model
