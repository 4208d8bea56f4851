// SPDX-License-Identifier: MIT
// aarch64 capture: every register KVM_GET_REG_LIST names (core, FP/SIMD or
// SVE, system, timer, firmware), MP state, vCPU events, the vGICv3 (after
// KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES) and the ITS (after
// KVM_DEV_ARM_ITS_SAVE_TABLES), into the manifest's aarch64 structs. Both
// table saves write into guest memory, so this runs before memory is saved
// (the capture driver does arch state first).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "capture/capture.h"
#include "base/status.h"
#include "kvm/aarch64/arm64.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::capture::aarch64 {

struct Options {
  // What the VMM passed to KVM_ARM_VCPU_INIT for each vCPU: KVM cannot be asked.
  std::vector<kvm::arm64::VcpuInit> inits;
  kvm::arm64::Device* gic = nullptr;  // the vGICv3 device, if the VM has one
  kvm::arm64::Device* its = nullptr;  // its ITS, if any
  // The value the VMM gave KVM_ARM_SET_COUNTER_OFFSET, if it used it (KVM
  // has no call to read it back).
  std::optional<uint64_t> counter_offset;
  uint32_t page_size = 4096;  // the guest's memory page size for the file
};

Status CaptureVcpu(kvm::arm64::Vcpu& vcpu, const kvm::arm64::VcpuInit& init,
                   schema::aarch64::Vcpu::Builder out);
Status CaptureGic(kvm::arm64::Device& gic, std::span<kvm::arm64::Vcpu* const> vcpus,
                  schema::aarch64::Gic::Builder out);
Status CaptureIts(kvm::arm64::Device& its, schema::aarch64::Its::Builder out);

// Fills arch, vcpus and vm of a manifest from a VM whose vCPUs are stopped.
Status CaptureManifest(kvm::arm64::Vm& vm, std::span<kvm::arm64::Vcpu* const> vcpus,
                       const Options& options, schema::Manifest::Builder manifest);

// The same behind the arch-neutral capture driver's interface.
class Arm64Capturer final : public ArchCapturer {
 public:
  Arm64Capturer(kvm::arm64::Vm& vm, std::vector<kvm::arm64::Vcpu*> vcpus, Options options)
      : vm_(vm), vcpus_(std::move(vcpus)), options_(std::move(options)) {}
  schema::Arch arch() const override { return schema::Arch::AARCH64; }
  uint32_t page_size() const override { return options_.page_size; }
  Status Capture(schema::Manifest::Builder manifest) override {
    return CaptureManifest(vm_, vcpus_, options_, manifest);
  }

 private:
  kvm::arm64::Vm& vm_;
  std::vector<kvm::arm64::Vcpu*> vcpus_;
  Options options_;
};

}  // namespace vmsnap::capture::aarch64
