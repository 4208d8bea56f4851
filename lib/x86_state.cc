// SPDX-License-Identifier: MIT
// x86 state held in memory: see x86_state.h.
#include "lib/x86_state.h"

namespace vmsnap::capi {

Result<size_t> StateVcpuOps::GetMsrs(std::vector<kvm_msr_entry>& entries) {
  size_t n = 0;
  for (; n < entries.size(); ++n) {
    auto it = msrs.find(entries[n].index);
    if (it == msrs.end()) break;
    entries[n].data = it->second;
  }
  return n;
}

Result<size_t> StateVcpuOps::SetMsrs(std::span<const kvm_msr_entry> entries) {
  for (const kvm_msr_entry& e : entries) msrs[e.index] = e.data;
  msrs_set = true;
  return entries.size();
}

Result<int> StateVmOps::CheckExtension(long cap) {
  if (!vcpu0_) return 1;
  switch (cap) {
    case KVM_CAP_SREGS2: return vcpu0_->sregs2 ? 1 : 0;
    case KVM_CAP_XSAVE: return vcpu0_->xsave ? 1 : 0;
    case KVM_CAP_XSAVE2: return vcpu0_->xsave ? static_cast<int>(vcpu0_->xsave->size()) : 0;
    case KVM_CAP_XCRS: return vcpu0_->xcrs ? 1 : 0;
    case KVM_CAP_DEBUGREGS: return vcpu0_->debugregs ? 1 : 0;
    case KVM_CAP_VCPU_EVENTS: return vcpu0_->events ? 1 : 0;
    case KVM_CAP_EXCEPTION_PAYLOAD: return exception_payload ? 1 : 0;
    case KVM_CAP_KVMCLOCK_CTRL: return 1;
    case KVM_CAP_GET_TSC_KHZ: return vcpu0_->tsc_khz ? 1 : 0;
    default: return 0;
  }
}

Result<kvm_irqchip> StateVmOps::GetIrqchip(uint32_t chip_id) {
  auto it = irqchips.find(chip_id);
  if (it == irqchips.end()) {
    static const char* const names[] = {"PIC_MASTER", "PIC_SLAVE", "IOAPIC"};
    return Status::NotFound(std::string("the VM has an irqchip but no ") + (chip_id < 3 ? names[chip_id] : "?") +
                            " state (vmsnap_writer_set_vm_state VMSNAP_X86_" +
                            (chip_id < 3 ? names[chip_id] : "?") + ")");
  }
  return it->second;
}

Result<kvm_pit_state2> StateVmOps::GetPit2() {
  if (!pit) return Status::NotFound("the VM has a PIT but no PIT state (vmsnap_writer_set_vm_state VMSNAP_X86_PIT)");
  return *pit;
}

Result<kvm_clock_data> StateVmOps::GetClock() {
  if (!clock) return Status::NotFound("the VM has no CLOCK state (vmsnap_writer_set_vm_state VMSNAP_X86_CLOCK)");
  return *clock;
}

Result<std::vector<kvm_cpuid_entry2>> StateVmOps::SupportedCpuid() {
  if (vcpu0_ && vcpu0_->cpuid) return *vcpu0_->cpuid;
  return std::vector<kvm_cpuid_entry2>{};
}

Result<std::vector<uint32_t>> StateVmOps::MsrIndexList() {
  std::vector<uint32_t> out;
  if (vcpu0_) {
    for (const auto& [index, value] : vcpu0_->msrs) out.push_back(index);
  }
  return out;
}

}  // namespace vmsnap::capi
