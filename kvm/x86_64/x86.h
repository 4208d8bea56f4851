// SPDX-License-Identifier: MIT
// x86-64 KVM state ioctls behind interfaces (per vCPU and per VM), so capture
// and restore can be handed a recording or fault-injecting double, plus the
// real implementations over kvm::Vcpu / kvm::Vm and host capability probing.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "kvm/kvm.h"

namespace vmsnap::kvm::x86 {

inline constexpr uint32_t kMsrTsc = 0x10;
inline constexpr uint32_t kMsrTscDeadline = 0x6e0;
inline constexpr uint32_t kMsrTscAux = 0xc0000103;

// MSRs that KVM saves and restores but KVM_GET_MSR_INDEX_LIST does not list
// (its list is built from the MSRs KVM emulates for the host's CPU model, and
// these are handled outside it): the MTRRs, TSC_AUX, IA32_XSS, SPEC_CTRL.
// Probed one by one.
std::vector<uint32_t> UnlistedSavedMsrs();

// The state ioctls of one x86 vCPU.
class VcpuOps {
 public:
  virtual ~VcpuOps() = default;
  virtual int index() const = 0;
  // " on vCPU N", for messages.
  std::string where() const { return " on vCPU " + std::to_string(index()); }

  virtual Result<kvm_mp_state> GetMpState() = 0;
  virtual Status SetMpState(const kvm_mp_state& s) = 0;
  virtual Result<kvm_regs> GetRegs() = 0;
  virtual Status SetRegs(const kvm_regs& r) = 0;
  virtual Result<kvm_sregs> GetSregs() = 0;
  virtual Status SetSregs(const kvm_sregs& s) = 0;
  virtual Result<kvm_sregs2> GetSregs2() = 0;
  virtual Status SetSregs2(const kvm_sregs2& s) = 0;
  // The XSAVE area of `size` bytes (KVM_GET_XSAVE2 when size > 4096 or
  // XSAVE2 is present, else KVM_GET_XSAVE).
  virtual Result<std::vector<uint8_t>> GetXsave(size_t size) = 0;
  // `area` is at least 4096 bytes, padded to the host's XSAVE2 size.
  virtual Status SetXsave(std::span<const uint8_t> area) = 0;
  virtual Result<kvm_xcrs> GetXcrs() = 0;
  virtual Status SetXcrs(const kvm_xcrs& x) = 0;
  virtual Result<kvm_debugregs> GetDebugRegs() = 0;
  virtual Status SetDebugRegs(const kvm_debugregs& d) = 0;
  virtual Result<kvm_lapic_state> GetLapic() = 0;
  virtual Status SetLapic(const kvm_lapic_state& l) = 0;
  // Raw KVM_GET_MSRS / KVM_SET_MSRS: the number of entries the kernel
  // processed, which may be short. GetMsrsAll/SetMsrsAll turn that into errors.
  virtual Result<size_t> GetMsrs(std::vector<kvm_msr_entry>& entries) = 0;
  virtual Result<size_t> SetMsrs(std::span<const kvm_msr_entry> entries) = 0;
  virtual Result<kvm_vcpu_events> GetVcpuEvents() = 0;
  virtual Status SetVcpuEvents(const kvm_vcpu_events& e) = 0;
  virtual Result<std::vector<kvm_cpuid_entry2>> GetCpuid() = 0;
  virtual Status SetCpuid(std::span<const kvm_cpuid_entry2> entries) = 0;
  virtual Result<uint32_t> GetTscKhz() = 0;
  virtual Status SetTscKhz(uint32_t khz) = 0;
  // false: the guest has not enabled kvmclock (EINVAL), nothing to tell it.
  virtual Result<bool> KvmclockCtrl() = 0;

  // All entries or an error naming the first one the kernel did not process:
  // "KVM_SET_MSRS on vCPU 1: entry 3 (MSR 0xc0000103) rejected".
  Status GetMsrsAll(std::vector<kvm_msr_entry>& entries);
  Status SetMsrsAll(std::span<const kvm_msr_entry> entries);
};

// Host capabilities that capture and restore consult.
struct HostCaps {
  bool sregs2 = false;
  bool xsave = false;
  size_t xsave_size = 4096;  // KVM_CAP_XSAVE2, or 4096
  bool xcrs = false;
  bool debugregs = false;
  bool vcpu_events = false;
  bool exception_payload = false;
  bool kvmclock_ctrl = false;
  bool tsc_control = false;
  bool get_tsc_khz = false;
  bool triple_fault_event = false;
};

// The VM-level state and configuration ioctls of one x86 VM, and the
// system-level queries that describe what this host supports.
class VmOps {
 public:
  virtual ~VmOps() = default;
  virtual Result<int> CheckExtension(long cap) = 0;
  virtual Result<kvm_irqchip> GetIrqchip(uint32_t chip_id) = 0;
  virtual Status SetIrqchip(const kvm_irqchip& chip) = 0;
  virtual Result<kvm_pit_state2> GetPit2() = 0;
  virtual Status SetPit2(const kvm_pit_state2& pit) = 0;
  virtual Result<kvm_clock_data> GetClock() = 0;
  virtual Status SetClock(const kvm_clock_data& clock) = 0;
  virtual Status SetTssAddr(uint64_t addr) = 0;
  virtual Status SetIdentityMapAddr(uint64_t addr) = 0;
  virtual Status CreateIrqchip() = 0;
  virtual Status CreatePit2(uint32_t flags) = 0;
  virtual Status EnableCap(uint32_t cap, std::span<const uint64_t> args) = 0;
  // KVM_GET_SUPPORTED_CPUID (system ioctl).
  virtual Result<std::vector<kvm_cpuid_entry2>> SupportedCpuid() = 0;
  // KVM_GET_MSR_INDEX_LIST (system ioctl).
  virtual Result<std::vector<uint32_t>> MsrIndexList() = 0;

  Result<HostCaps> ProbeCaps();
};

class RealVcpuOps final : public VcpuOps {
 public:
  explicit RealVcpuOps(Vcpu* vcpu) : vcpu_(vcpu) {}
  int index() const override { return vcpu_->index(); }
  Result<kvm_mp_state> GetMpState() override;
  Status SetMpState(const kvm_mp_state& s) override;
  Result<kvm_regs> GetRegs() override;
  Status SetRegs(const kvm_regs& r) override;
  Result<kvm_sregs> GetSregs() override;
  Status SetSregs(const kvm_sregs& s) override;
  Result<kvm_sregs2> GetSregs2() override;
  Status SetSregs2(const kvm_sregs2& s) override;
  Result<std::vector<uint8_t>> GetXsave(size_t size) override;
  Status SetXsave(std::span<const uint8_t> area) override;
  Result<kvm_xcrs> GetXcrs() override;
  Status SetXcrs(const kvm_xcrs& x) override;
  Result<kvm_debugregs> GetDebugRegs() override;
  Status SetDebugRegs(const kvm_debugregs& d) override;
  Result<kvm_lapic_state> GetLapic() override;
  Status SetLapic(const kvm_lapic_state& l) override;
  Result<size_t> GetMsrs(std::vector<kvm_msr_entry>& entries) override;
  Result<size_t> SetMsrs(std::span<const kvm_msr_entry> entries) override;
  Result<kvm_vcpu_events> GetVcpuEvents() override;
  Status SetVcpuEvents(const kvm_vcpu_events& e) override;
  Result<std::vector<kvm_cpuid_entry2>> GetCpuid() override;
  Status SetCpuid(std::span<const kvm_cpuid_entry2> entries) override;
  Result<uint32_t> GetTscKhz() override;
  Status SetTscKhz(uint32_t khz) override;
  Result<bool> KvmclockCtrl() override;

 private:
  Vcpu* vcpu_;  // not owned
};

class RealVmOps final : public VmOps {
 public:
  explicit RealVmOps(Vm* vm) : vm_(vm) {}
  Result<int> CheckExtension(long cap) override { return vm_->CheckExtension(cap); }
  Result<kvm_irqchip> GetIrqchip(uint32_t chip_id) override;
  Status SetIrqchip(const kvm_irqchip& chip) override;
  Result<kvm_pit_state2> GetPit2() override;
  Status SetPit2(const kvm_pit_state2& pit) override;
  Result<kvm_clock_data> GetClock() override;
  Status SetClock(const kvm_clock_data& clock) override;
  Status SetTssAddr(uint64_t addr) override;
  Status SetIdentityMapAddr(uint64_t addr) override;
  Status CreateIrqchip() override;
  Status CreatePit2(uint32_t flags) override;
  Status EnableCap(uint32_t cap, std::span<const uint64_t> args) override { return vm_->EnableCap(cap, args); }
  Result<std::vector<kvm_cpuid_entry2>> SupportedCpuid() override;
  Result<std::vector<uint32_t>> MsrIndexList() override;

 private:
  Vm* vm_;  // not owned
};

}  // namespace vmsnap::kvm::x86

namespace vmsnap::kvm::x86 {

// The VM configuration a VMM applied before any vCPU existed: KVM has no ioctl
// that reads it back, yet a VM built without it behaves differently (no
// irqchip, no exception payloads), so it is state too and restore replays it
// into the new VM first (docs/state-coverage.md, steps C1-C4).
struct VmConfig {
  uint64_t tss_addr = 0;
  uint64_t identity_map_addr = 0;
  bool irqchip = false;
  bool pit = false;
  uint32_t pit_flags = 0;
  struct Cap {
    uint32_t cap = 0;
    std::string name;
    std::vector<uint64_t> args;
  };
  std::vector<Cap> enabled_caps;
  uint32_t dirty_ring_bytes = 0;
};

}  // namespace vmsnap::kvm::x86
