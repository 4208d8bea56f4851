// SPDX-License-Identifier: MIT
// x86-64 restore: replays the VM configuration, then every vCPU's state and
// the VM-level state into a fresh VM, in the order docs/state-coverage.md
// documents; and refuses snapshots this host cannot run.
#pragma once

#include <linux/kvm.h>

#include <string>
#include <vector>

#include "base/status.h"
#include "restore/restore.h"
#include "kvm/x86_64/x86.h"
#include "state/x86_64/x86_fields.h"
#include "schemas/manifest.capnp.h"
#include "schemas/x86_64.capnp.h"

namespace vmsnap::restore::x86 {

// Creates the VM-level configuration; must run before any vCPU exists (the
// identity map address, the irqchip and some caps are refused afterwards).
Status ApplyVmConfig(kvm::x86::VmOps& vm, const kvm::x86::VmConfig& config);

// CONFIG without the dirty ring and the caps that set up dirty logging.
kvm::x86::VmConfig WithoutDirtyLogging(kvm::x86::VmConfig config);

// Compares the feature bits a snapshot's CPUID needs with what this host's KVM
// supports; the error names each missing feature ("avx512f (CPUID.07H:EBX[16])").
Status CheckCpuidSupported(capnp::List<schema::x86::CpuidEntry>::Reader wanted,
                           const std::vector<kvm_cpuid_entry2>& supported);

// Everything that can be checked before the VM is built: vCPU list shape,
// LAPIC image size, XSAVE size.
Status CheckHost(kvm::x86::VmOps& vm, schema::Manifest::Reader manifest);

// The CPUID feature bits this host can give a guest: KVM_GET_SUPPORTED_CPUID,
// united with what KVM_GET_CPUID2 reports back on `fresh_vcpu` after it was
// given that set (on some hosts, this one included, KVM presents more than
// KVM_GET_SUPPORTED_CPUID lists; see docs/state-coverage.md). `fresh_vcpu`
// must never have run; its CPUID is set again by RestoreVcpu.
Result<std::vector<kvm_cpuid_entry2>> HostCpuid(kvm::x86::VmOps& vm, kvm::x86::VcpuOps& fresh_vcpu);

// CheckCpuidSupported for every vCPU of the snapshot against HostCpuid.
Status CheckCpuid(kvm::x86::VmOps& vm, kvm::x86::VcpuOps& fresh_vcpu, schema::Manifest::Reader manifest);
// The same against a HostCpuid result found earlier (it depends only on the
// host and KVM).
Status CheckCpuidAgainst(const std::vector<kvm_cpuid_entry2>& host, schema::Manifest::Reader manifest);

// Restores one vCPU (steps 1-9 of docs/state-coverage.md). The vCPU must be
// fresh (never run).
Status RestoreVcpu(kvm::x86::VcpuOps& vcpu, schema::x86::Vcpu::Reader state,
                   const kvm::x86::HostCaps& caps);
// The same in two halves: steps 1-6 (CPUID, TSC rate, MP state, registers,
// XSAVE, XCRs, debug registers), which mean the same whenever the guest
// starts, then steps 7-9 (LAPIC, MSRs, events), whose timers (the LAPIC
// timer's count, the TSC and its deadline) run from the moment they are set.
Status RestoreVcpuUntimed(kvm::x86::VcpuOps& vcpu, schema::x86::Vcpu::Reader state,
                          const kvm::x86::HostCaps& caps);
Status RestoreVcpuTimed(kvm::x86::VcpuOps& vcpu, schema::x86::Vcpu::Reader state,
                        const kvm::x86::HostCaps& caps);

// Restores the VM-level state (PIT2, CLOCK, IRQCHIP), after every vCPU.
Status RestoreVm(kvm::x86::VmOps& vm, schema::x86::Vm::Reader state);

// The whole sequence after the VM config, memory and vCPUs exist: every vCPU,
// then the VM, then KVM_KVMCLOCK_CTRL on each vCPU. `vcpus` by index.
// `part`: all of it, or its halves (StatePart): kUntimed is every vCPU's
// RestoreVcpuUntimed; kTimed the rest, every vCPU's RestoreVcpuTimed then the
// VM (the PIT counts and kvmclock runs from when they are set) and
// KVM_KVMCLOCK_CTRL.
Status RestoreState(kvm::x86::VmOps& vm, const std::vector<kvm::x86::VcpuOps*>& vcpus,
                    schema::Manifest::Reader manifest, StatePart part = StatePart::kAll);

// The same steps behind the arch-neutral restore order (restore/restore.h).
class X86Restorer final : public ArchRestorer {
 public:
  // `vm` is not owned and must outlive the restorer.
  explicit X86Restorer(kvm::x86::VmOps& vm) : vm_(vm) {}
  // The new VM's vCPUs by index, once they exist (not owned).
  void set_vcpus(std::vector<kvm::x86::VcpuOps*> vcpus) { vcpus_ = std::move(vcpus); }
  // The configuration RestoreVmConfig applied.
  const kvm::x86::VmConfig& config() const { return config_; }

  Status CheckHost(schema::Manifest::Reader m) override { return x86::CheckHost(vm_, m); }
  // Whether the snapshot's dirty-logging setup (the ring and its size, manual
  // protection) is replayed. The VMM replays it; a VMM that enables dirty
  // tracking itself afterwards (the C API's) must get a VM without it.
  void set_replay_dirty_logging(bool replay) { replay_dirty_logging_ = replay; }

  // A VM configured before its snapshot was known (a warm VM), with
  // `config`, which its caller checked is the snapshot's: the configuration
  // step then applies nothing.
  void set_preconfigured(kvm::x86::VmConfig config) {
    config_ = std::move(config);
    preconfigured_ = true;
  }

  Status RestoreVmConfig(schema::Manifest::Reader m) override {
    if (preconfigured_) return Status::Ok();
    config_ = state::x86::Decode(m.getVm().getX8664().getConfig());
    if (!replay_dirty_logging_) config_ = WithoutDirtyLogging(std::move(config_));
    return ApplyVmConfig(vm_, config_);
  }
  // HostCpuid, found before (a warm VM finds it while it waits): the check
  // then makes no KVM call.
  void set_host_cpuid(std::vector<kvm_cpuid_entry2> host) { host_cpuid_ = std::move(host); }
  Status CheckVcpus(schema::Manifest::Reader m) override {
    if (!host_cpuid_.empty()) return CheckCpuidAgainst(host_cpuid_, m);
    if (vcpus_.empty()) return Status::Internal("x86 restore: no vCPUs");
    return CheckCpuid(vm_, *vcpus_[0], m);
  }
  Status RestoreState(schema::Manifest::Reader m) override { return x86::RestoreState(vm_, vcpus_, m); }
  Status RestoreStatePart(schema::Manifest::Reader m, StatePart part) override {
    return x86::RestoreState(vm_, vcpus_, m, part);
  }

 private:
  kvm::x86::VmOps& vm_;
  std::vector<kvm::x86::VcpuOps*> vcpus_;
  kvm::x86::VmConfig config_;
  bool replay_dirty_logging_ = true;
  bool preconfigured_ = false;
  std::vector<kvm_cpuid_entry2> host_cpuid_;
};

}  // namespace vmsnap::restore::x86
