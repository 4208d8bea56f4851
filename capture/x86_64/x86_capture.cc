// SPDX-License-Identifier: MIT
// x86-64 capture: see x86_capture.h. The order of reads is documented in
// docs/state-coverage.md.
#include "capture/x86_64/x86_capture.h"

#include <algorithm>
#include <set>

#include "state/x86_64/x86_fields.h"

namespace vmsnap::capture::x86 {
namespace sx = schema::x86;
namespace kx = kvm::x86;
using state::x86::Encode;

X86Capturer::X86Capturer(kx::VmOps* vm, std::vector<kx::VcpuOps*> vcpus, kx::VmConfig config)
    : vm_(vm), vcpus_(std::move(vcpus)), config_(std::move(config)) {}

Result<std::vector<uint32_t>> X86Capturer::SavedMsrs() {
  if (msrs_probed_) return msrs_;
  if (vcpus_.empty()) return Status::InvalidArgument("capture: VM has no vCPUs");
  VMSNAP_ASSIGN_OR_RETURN(std::vector<uint32_t> listed, vm_->MsrIndexList());
  std::sort(listed.begin(), listed.end());
  std::set<uint32_t> candidates(listed.begin(), listed.end());
  for (uint32_t m : kx::UnlistedSavedMsrs()) candidates.insert(m);
  std::set<uint32_t> unlisted;
  for (uint32_t m : kx::UnlistedSavedMsrs()) {
    if (!std::binary_search(listed.begin(), listed.end(), m)) unlisted.insert(m);
  }
  std::vector<uint32_t> keep;
  for (uint32_t index : candidates) {
    // KVM lists some MSRs the vCPU's CPUID does not enable; a one-entry read
    // tells which ones this vCPU really has.
    std::vector<kvm_msr_entry> one(1);
    one[0].index = index;
    VMSNAP_ASSIGN_OR_RETURN(size_t n, vcpus_[0]->GetMsrs(one));
    if (n != 1) continue;
    if (unlisted.count(index)) {
      // An unlisted MSR is saved only if KVM also takes it back: writing the
      // value just read is harmless for these (MTRRs, TSC_AUX, XSS,
      // SPEC_CTRL), and some hosts read IA32_XSS but refuse to set it.
      VMSNAP_ASSIGN_OR_RETURN(size_t w, vcpus_[0]->SetMsrs(one));
      if (w != 1) continue;
    }
    keep.push_back(index);
  }
  msrs_ = std::move(keep);
  msrs_probed_ = true;
  return msrs_;
}

Status X86Capturer::CaptureVcpu(kx::VcpuOps& vcpu, sx::Vcpu::Builder out) {
  if (!caps_probed_) {
    VMSNAP_ASSIGN_OR_RETURN(caps_, vm_->ProbeCaps());
    caps_probed_ = true;
  }
  // MP_STATE first: reading it lets KVM process pending INIT/SIPI, which can
  // change CS:RIP; the registers read after it then agree with it.
  VMSNAP_ASSIGN_OR_RETURN(kvm_mp_state mp, vcpu.GetMpState());
  out.setMpState(mp.mp_state);

  VMSNAP_ASSIGN_OR_RETURN(kvm_regs r, vcpu.GetRegs());
  Encode(r, out.initRegs());

  if (caps_.sregs2) {
    // SREGS2 carries the PAE PDPTRs (valid only with PAE paging outside long
    // mode); it has no interrupt bitmap: a pending external interrupt is in
    // VCPU_EVENTS instead.
    VMSNAP_ASSIGN_OR_RETURN(kvm_sregs2 s, vcpu.GetSregs2());
    Encode(s, out.initSregs());
  } else {
    VMSNAP_ASSIGN_OR_RETURN(kvm_sregs s, vcpu.GetSregs());
    Encode(s, out.initSregs());
  }

  if (caps_.xsave) {
    VMSNAP_ASSIGN_OR_RETURN(std::vector<uint8_t> xs, vcpu.GetXsave(caps_.xsave_size));
    out.setXsave(kj::arrayPtr(xs.data(), xs.size()));
  }
  if (caps_.xcrs) {
    VMSNAP_ASSIGN_OR_RETURN(kvm_xcrs x, vcpu.GetXcrs());
    VMSNAP_RETURN_IF_ERROR(Encode(x, out).Context("vCPU " + std::to_string(vcpu.index())));
  }
  if (caps_.debugregs) {
    VMSNAP_ASSIGN_OR_RETURN(kvm_debugregs d, vcpu.GetDebugRegs());
    Encode(d, out.initDebugregs());
  }
  VMSNAP_ASSIGN_OR_RETURN(kvm_lapic_state lapic, vcpu.GetLapic());
  Encode(lapic, out);

  VMSNAP_ASSIGN_OR_RETURN(std::vector<uint32_t> indices, SavedMsrs());
  std::vector<kvm_msr_entry> entries(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) entries[i].index = indices[i];
  // A short count is an error naming the MSR (GetMsrsAll).
  VMSNAP_RETURN_IF_ERROR(vcpu.GetMsrsAll(entries));
  Encode(std::span<const kvm_msr_entry>(entries), out);

  if (caps_.vcpu_events) {
    VMSNAP_ASSIGN_OR_RETURN(kvm_vcpu_events e, vcpu.GetVcpuEvents());
    Encode(e, out.initEvents());
  }

  VMSNAP_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> cpuid, vcpu.GetCpuid());
  Encode(std::span<const kvm_cpuid_entry2>(cpuid), out);
  if (caps_.get_tsc_khz) {
    VMSNAP_ASSIGN_OR_RETURN(uint32_t khz, vcpu.GetTscKhz());
    out.setTscKhz(khz);
  }
  out.setKvmclockCtrl(caps_.kvmclock_ctrl);
  return Status::Ok();
}

Status X86Capturer::CaptureVm(sx::Vm::Builder out) {
  Encode(config_, out.initConfig());
  if (config_.irqchip) {
    VMSNAP_ASSIGN_OR_RETURN(kvm_irqchip master, vm_->GetIrqchip(KVM_IRQCHIP_PIC_MASTER));
    Encode(master.chip.pic, out.initPicMaster());
    VMSNAP_ASSIGN_OR_RETURN(kvm_irqchip slave, vm_->GetIrqchip(KVM_IRQCHIP_PIC_SLAVE));
    Encode(slave.chip.pic, out.initPicSlave());
    VMSNAP_ASSIGN_OR_RETURN(kvm_irqchip io, vm_->GetIrqchip(KVM_IRQCHIP_IOAPIC));
    Encode(io.chip.ioapic, out.initIoapic());
  }
  if (config_.pit) {
    VMSNAP_ASSIGN_OR_RETURN(kvm_pit_state2 p, vm_->GetPit2());
    Encode(p, out.initPit());
  }
  VMSNAP_ASSIGN_OR_RETURN(kvm_clock_data clk, vm_->GetClock());
  Encode(clk, out.initClock());
  return Status::Ok();
}

Status X86Capturer::Capture(schema::Manifest::Builder manifest) {
  manifest.setArch(schema::Arch::X8664);
  auto list = manifest.initVcpus(static_cast<unsigned>(vcpus_.size()));
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    auto v = list[static_cast<unsigned>(i)];
    v.setId(static_cast<uint32_t>(vcpus_[i]->index()));
    VMSNAP_RETURN_IF_ERROR(CaptureVcpu(*vcpus_[i], v.initX8664()));
  }
  return CaptureVm(manifest.initVm().initX8664());
}

}  // namespace vmsnap::capture::x86
