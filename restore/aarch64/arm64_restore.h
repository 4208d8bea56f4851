// SPDX-License-Identifier: MIT
// aarch64 restore, in the order the kernel requires (docs/state-coverage.md,
// "aarch64"): vCPU init and SVE finalization, the register-list check, the
// counter offset, the vCPU registers, the vGICv3 and ITS devices and their
// initialization, the GIC state, MP state and events, and the ITS tables and
// registers once guest memory is in place.
#pragma once

#include <memory>
#include <span>

#include "base/status.h"
#include "kvm/aarch64/arm64.h"
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
// 1-2: KVM_ARM_VCPU_INIT, then with SVE the vector lengths and FINALIZE.
Status InitVcpu(ka::Vcpu& vcpu, schema::aarch64::Vcpu::Reader state);
// 3: every register the snapshot's list holds must be in this host's list.
Status CheckRegList(ka::Vcpu& vcpu, schema::aarch64::Vcpu::Reader state);
// 4: KVM_ARM_SET_COUNTER_OFFSET, if the source used it.
Status RestoreCounterOffset(ka::Vm& vm, schema::aarch64::Vm::Reader state);
// 5: core, FP/SIMD or SVE, system, firmware and timer registers.
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

// All of it, for vCPUs the VMM created (and did not initialize) on a VM with
// its memory already loaded.
Status RestoreManifest(ka::Vm& vm, std::span<ka::Vcpu* const> vcpus, schema::Manifest::Reader manifest,
                       Devices* devices);

}  // namespace vmsnap::restore::aarch64
