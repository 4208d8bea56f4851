// SPDX-License-Identifier: MIT
// x86-64 capture: reads every piece of vCPU and VM state through the
// kvm::x86 interfaces into the schema::x86 manifest fields.
#pragma once

#include <vector>

#include "capture/capture.h"
#include "kvm/x86_64/x86.h"
#include "schemas/x86_64.capnp.h"

namespace vmsnap::capture::x86 {

class X86Capturer final : public ArchCapturer {
 public:
  // `vm` and `vcpus` are not owned and must outlive the capturer; vcpus are
  // by index. `config` is what the VMM applied when it created the VM.
  X86Capturer(kvm::x86::VmOps* vm, std::vector<kvm::x86::VcpuOps*> vcpus, kvm::x86::VmConfig config);

  schema::Arch arch() const override { return schema::Arch::X8664; }
  uint32_t page_size() const override { return 4096; }
  // All vCPUs must be paused (no thread inside KVM_RUN).
  Status Capture(schema::Manifest::Builder manifest) override;

  Status CaptureVcpu(kvm::x86::VcpuOps& vcpu, schema::x86::Vcpu::Builder out);
  Status CaptureVm(schema::x86::Vm::Builder out);
  // The MSRs to save: KVM_GET_MSR_INDEX_LIST plus the unlisted ones KVM
  // saves, each kept only if a one-entry KVM_GET_MSRS on vCPU 0 reads it.
  // Probed once, then cached.
  Result<std::vector<uint32_t>> SavedMsrs();

 private:
  kvm::x86::VmOps* vm_;
  std::vector<kvm::x86::VcpuOps*> vcpus_;
  kvm::x86::VmConfig config_;
  bool caps_probed_ = false;
  kvm::x86::HostCaps caps_;
  std::vector<uint32_t> msrs_;
  bool msrs_probed_ = false;
};

}  // namespace vmsnap::capture::x86
