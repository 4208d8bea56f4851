// SPDX-License-Identifier: MIT
// aarch64 restore, in the order the kernel requires (docs/state-coverage.md,
// "aarch64"): the counter offset before any vCPU exists, vCPU init and SVE
// finalization and the register-list check once they exist, then the vCPU
// registers, the vGICv3 and ITS devices and their initialization, the GIC
// state, MP state and events, and the ITS tables and registers (guest memory
// is in place by then). Arm64Restorer runs these steps behind the
// arch-neutral restore order (restore/restore.h).
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "base/status.h"
#include "kvm/aarch64/arm64.h"
#include "restore/restore.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::restore::aarch64 {

namespace ka = kvm::arm64;

// The devices a restore creates; the VMM keeps them for the VM's life.
struct Devices {
  std::unique_ptr<ka::Device> gic;
  std::unique_ptr<ka::Device> its;
};

// Steps, each usable alone (tests break the order with them). The numbers
// are those of docs/state-coverage.md.
// 2-3: KVM_ARM_VCPU_INIT, then with SVE the vector lengths and FINALIZE.
Status InitVcpu(ka::Vcpu& vcpu, schema::aarch64::Vcpu::Reader state);
// 4: every register the snapshot's list holds must be in this host's list.
Status CheckRegList(ka::Vcpu& vcpu, schema::aarch64::Vcpu::Reader state);
// 1: KVM_ARM_SET_COUNTER_OFFSET, if the source used it.
Status RestoreCounterOffset(ka::Vm& vm, schema::aarch64::Vm::Reader state);
// 5: core, FP/SIMD or SVE, system, firmware and timer registers, group by
// group in the order of kvm/aarch64/reg_groups.h.
Status RestoreVcpuRegs(ka::Vcpu& vcpu, schema::aarch64::Vcpu::Reader state);
// 6: creates the vGICv3 (addresses, NR_IRQS) and the ITS (its base).
Status CreateDevices(ka::Vm& vm, schema::aarch64::Vm::Reader state, Devices* out);
// 7: KVM_DEV_ARM_VGIC_CTRL_INIT.
Status InitGic(ka::Device& gic);
// 8-11: distributor, redistributors, CPU interfaces, line levels.
Status RestoreGicState(ka::Device& gic, schema::aarch64::Gic::Reader state);
// 12: MP state and pending SError.
Status RestoreVcpuEvents(ka::Vcpu& vcpu, schema::aarch64::Vcpu::Reader state);
// 13: ITS registers and tables; guest memory must already be loaded.
Status RestoreIts(ka::Device& its, schema::aarch64::Its::Reader state);

// The steps behind the arch-neutral restore order. RestoreInto calls
// RestoreVmConfig before the target creates any vCPU (the counter offset),
// CheckVcpus once they exist, never ran and guest memory is loaded
// (KVM_ARM_VCPU_INIT and SVE finalization, which the register list needs,
// then the list check, so that a host lacking registers is refused before
// any state is written), and RestoreState (steps 5-13). The vGIC is created
// and initialized inside RestoreState, after every vCPU was created and
// initialized: KVM refuses KVM_CREATE_VCPU once the vGIC is initialized.
class Arm64Restorer final : public ArchRestorer {
 public:
  explicit Arm64Restorer(ka::Vm& vm) : vm_(vm) {}
  // The vCPUs the target created, by index (before CheckVcpus).
  void set_vcpus(std::vector<ka::Vcpu*> vcpus) { vcpus_ = std::move(vcpus); }
  Status RestoreVmConfig(schema::Manifest::Reader manifest) override;
  Status CheckVcpus(schema::Manifest::Reader manifest) override;
  Status RestoreState(schema::Manifest::Reader manifest) override;
  // The devices RestoreState created; the VMM keeps them for the VM's life.
  Devices& devices() { return devices_; }

 private:
  Status ForEachVcpu(schema::Manifest::Reader manifest,
                     Status (*step)(ka::Vcpu&, schema::aarch64::Vcpu::Reader));
  ka::Vm& vm_;
  std::vector<ka::Vcpu*> vcpus_;
  Devices devices_;
};

// All of it, for vCPUs the VMM created (and did not initialize) on a VM with
// its memory already loaded: the three steps of Arm64Restorer in order.
Status RestoreManifest(ka::Vm& vm, std::span<ka::Vcpu* const> vcpus, schema::Manifest::Reader manifest,
                       Devices* devices);

}  // namespace vmsnap::restore::aarch64
