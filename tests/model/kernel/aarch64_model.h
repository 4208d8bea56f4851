// SPDX-License-Identifier: MIT
// A model of the arm64 kernel's side of the vCPU ONE_REG, init/finalize,
// MP-state and event calls, the counter offset, and the vGICv3 and ITS device
// attributes, behind the same interface as the real calls (kvm/aarch64/arm64.h).
// It follows Documentation/virt/kvm/api.rst, devices/arm-vgic-v3.rst,
// devices/arm-vgic-its.rst and arch/arm64/kvm/ (guest.c, arm.c, arch_timer.c,
// vgic/vgic-kvm-device.c, vgic/vgic-its.c) for every errno a VMM can meet by
// calling things in the wrong order, so that capture/restore can be tested
// on hosts without arm64 KVM. Test-only code.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "kvm/aarch64/arm64.h"
#include "tests/model/kernel/faults.h"

namespace vmsnap::kvm::model {

class Arm64ModelVcpu;
class Arm64ModelGic;
class Arm64ModelIts;

class Arm64Model final : public arm64::Vm {
 public:
  // What the host offers; a restore onto a host that offers less must fail
  // with a message naming what is missing.
  struct Host {
    bool sve = true;
    bool ptimer = true;                    // KVM_REG_ARM_PTIMER_* listed (Linux 5.x+)
    bool ras = true;                       // SError syndromes (KVM_CAP_ARM_INJECT_SERROR_ESR)
    bool counter_offset = true;            // KVM_CAP_COUNTER_OFFSET
    uint64_t workaround_level = 1;         // highest SMCCC workaround level accepted
    std::set<uint64_t> missing_sysregs;    // registers this host's KVM does not list
    uint32_t pri_bits = 5;                 // ICC_CTLR_EL1.PRIbits + 1 of the host GIC
  };
  Arm64Model() : Arm64Model(Host{}) {}
  explicit Arm64Model(Host host);
  ~Arm64Model() override;

  // KVM_CREATE_VCPU: -EBUSY once the vGIC is initialized.
  int CreateVcpu(Arm64ModelVcpu** out = nullptr);
  Arm64ModelVcpu& vcpu(size_t i) { return *vcpus_[i]; }
  size_t vcpu_count() const { return vcpus_.size(); }

  // Guest RAM at guest-physical 0 (the ITS tables live there).
  std::vector<uint8_t>& memory() { return memory_; }
  // The host's physical counter moves on (time passes).
  void AdvanceCounter(uint64_t ticks) { phys_counter_ += ticks; }
  uint64_t phys_counter() const { return phys_counter_; }
  // A vCPU entered KVM_RUN: some calls refuse from then on.
  void Run() { ran_ = true; }
  bool ran() const { return ran_; }

  Arm64ModelGic* gic() { return gic_; }
  Arm64ModelIts* its() { return its_; }
  const Host& host() const { return host_; }
  bool has_counter_offset() const { return has_counter_offset_; }
  uint64_t voffset() const { return voffset_; }
  uint64_t poffset() const { return poffset_; }

  FaultPlan& faults() { return faults_; }

  // arm64::Vm
  int CreateDevice(uint32_t type, std::unique_ptr<arm64::Device>* out) override;
  int SetCounterOffset(const arm64::CounterOffset& off) override;

 private:
  friend class Arm64ModelVcpu;
  friend class Arm64ModelGic;
  friend class Arm64ModelIts;
  bool Inject(const char* op, int* ret);
  Arm64ModelVcpu* VcpuByMpidrAttr(uint64_t attr_mpidr);

  Host host_;
  std::vector<std::unique_ptr<Arm64ModelVcpu>> vcpus_;
  std::vector<uint8_t> memory_ = std::vector<uint8_t>(1 << 20, 0);
  uint64_t phys_counter_ = 0x100000000ull;
  uint64_t voffset_ = 0, poffset_ = 0;  // VM-wide, as in kvm->arch.timer_data
  bool has_counter_offset_ = false;
  bool ran_ = false;
  Arm64ModelGic* gic_ = nullptr;  // owned by the caller of CreateDevice
  Arm64ModelIts* its_ = nullptr;
  FaultPlan faults_;
};

class Arm64ModelVcpu final : public arm64::Vcpu {
 public:
  Arm64ModelVcpu(Arm64Model* vm, uint32_t index) : vm_(vm), index_(index) {}

  int Init(const arm64::VcpuInit& init) override;
  int Finalize(int feature) override;
  int GetRegList(uint64_t* n, uint64_t* ids) override;
  int GetOneReg(const kvm_one_reg& reg) override;
  int SetOneReg(const kvm_one_reg& reg) override;
  int GetMpState(kvm_mp_state* state) override;
  int SetMpState(const kvm_mp_state& state) override;
  int GetEvents(arm64::VcpuEvents* events) override;
  int SetEvents(const arm64::VcpuEvents& events) override;

  // The register file by id (bytes as the kernel copies them), the guest's
  // view of the timers and the rest, for tests to set up and compare.
  struct State {
    std::map<uint64_t, std::vector<uint8_t>> regs;
    uint64_t vctl = 0, vcval = 0, pctl = 0, pcval = 0;
    uint32_t mp_state = KVM_MP_STATE_RUNNABLE;
    arm64::VcpuEvents events{};
  };
  State& state() { return state_; }
  const State& state() const { return state_; }
  // Sets a register of 8 bytes or less (host byte order, as the kernel's u64).
  void Poke(uint64_t id, uint64_t value);
  uint64_t Peek(uint64_t id) const;
  bool initialized() const { return initialized_; }
  bool finalized() const { return finalized_; }
  uint64_t mpidr() const { return Peek(arm64::kRegMpidrEl1); }
  // The guest's virtual count now.
  uint64_t vcount() const { return vm_->phys_counter_ - vm_->voffset_; }
  // Whether each timer's output is asserted now (CTL.ISTATUS as the guest
  // reads it). The model decides when a timer fires at the moment it is
  // programmed: a write of its CVAL or CTL fixes the host counter value at
  // which it fires from the counter offset in force then, the way the kernel
  // evaluates a timer against the counter as it stands (kvm_timer_should_fire,
  // and the emulated timer's deadline from kvm_timer_compute_delta). A later
  // write of TIMER_CNT moves the guest's counter but not that deadline, so a
  // restore that writes CVAL or CTL before CNT fires at the wrong time.
  bool vtimer_asserted() const;
  bool ptimer_asserted() const;

 private:
  bool Inject(const char* op, int* ret) { return vm_->Inject(op, ret); }
  bool HasSve() const { return arm64::HasFeature(init_, arm64::kFeatureSve); }
  Arm64Model* vm_;
  uint32_t index_;
  bool initialized_ = false;
  bool finalized_ = false;
  arm64::VcpuInit init_{};
  State state_;
  // The counter offset each timer was last programmed against; unset for a
  // timer a test set up directly (then the offset in force now).
  std::optional<uint64_t> vtimer_offset_, ptimer_offset_;
};

bool operator==(const Arm64ModelVcpu::State& a, const Arm64ModelVcpu::State& b);

// The vGICv3 device: registers as words by offset, the enable/pending/active
// bitmaps with their set/clear register pairs, per-vCPU redistributors and
// CPU interfaces by MPIDR.
class Arm64ModelGic final : public arm64::Device {
 public:
  explicit Arm64ModelGic(Arm64Model* vm) : vm_(vm) {}
  ~Arm64ModelGic() override;
  int SetAttr(const kvm_device_attr& attr) override;
  int GetAttr(const kvm_device_attr& attr) override;
  int HasAttr(const kvm_device_attr& attr) override;

  struct Cpu {
    std::map<uint32_t, uint32_t> redist;   // by offset (set/clear pairs under the set offset)
    std::map<uint64_t, uint64_t> sysregs;  // ICC_* by encoding
    uint32_t ppi_levels = 0;
  };
  struct State {
    uint64_t dist_base = ~0ull, redist_base = ~0ull;
    uint32_t nr_irqs = 0;
    std::map<uint32_t, uint32_t> dist;
    std::map<uint64_t, Cpu> cpus;          // by MPIDR attribute form
    std::map<uint32_t, uint32_t> spi_levels;  // by first INTID
    bool pending_saved = false;
  };
  const State& state() const { return state_; }
  State& state() { return state_; }
  bool initialized() const { return initialized_; }

 private:
  int Access(const kvm_device_attr& attr, bool write);
  int DistAccess(uint32_t offset, uint32_t* val, bool write);
  int RedistAccess(Cpu& cpu, uint32_t offset, uint32_t* val, bool write);
  Arm64Model* vm_;
  bool initialized_ = false;
  State state_;
};

// The ITS device: GITS_* registers and the translations its tables hold.
class Arm64ModelIts final : public arm64::Device {
 public:
  explicit Arm64ModelIts(Arm64Model* vm) : vm_(vm) {}
  ~Arm64ModelIts() override;
  int SetAttr(const kvm_device_attr& attr) override;
  int GetAttr(const kvm_device_attr& attr) override;
  int HasAttr(const kvm_device_attr& attr) override;

  // An event translation: device id, event id -> LPI, collection.
  struct Ite {
    uint32_t device, event, lpi, collection;
    bool operator==(const Ite&) const = default;
  };
  // A mapped device (MAPD): where its interrupt translation table lives in
  // guest memory and how many EventID bits it has, minus one.
  struct Dte {
    uint64_t itt_addr;  // 256-byte aligned
    uint32_t size;
    bool operator==(const Dte&) const = default;
  };
  struct State {
    uint64_t base = ~0ull;
    std::map<uint32_t, uint64_t> regs;  // GITS_* by offset
    std::map<uint32_t, Dte> devices;    // by DeviceID
    std::map<uint32_t, uint64_t> collections;  // ICID -> RDBase (vCPU number)
    std::vector<Ite> translations;      // by DeviceID, then EventID
  };
  State& state() { return state_; }
  const State& state() const { return state_; }
  bool enabled() const { return state_.regs.count(0) && (state_.regs.at(0) & 1); }

 private:
  int SaveTables();
  int RestoreTables();
  Arm64Model* vm_;
  State state_;
};

}  // namespace vmsnap::kvm::model
