// SPDX-License-Identifier: MIT
// s390x restore: replays CMMA enablement before vCPUs exist, then storage keys,
// CMMA values (KVM_S390_SET_CMMA_BITS in blocks, mask all ones), the TOD
// clock and each vCPU's registers from the manifest's s390 structs.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "restore/restore.h"
#include "kvm/s390x/s390.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::restore::s390x {

struct Options {
  uint32_t cmma_block = 512 * 1024;  // values per SET_CMMA_BITS
  uint64_t skeys_block = kvm::s390::kSkeysMax;
};

// Before any vCPU is created: KVM refuses to enable CMMA afterwards (EBUSY).
Status RestoreVmConfig(kvm::s390::Vm& vm, schema::s390::Vm::Reader state);
// After guest memory is in place: storage keys, CMMA values, TOD.
Status RestoreVmState(kvm::s390::Vm& vm, schema::s390::Vm::Reader state, const Options& options = {});
Status RestoreVcpu(kvm::s390::Vcpu& vcpu, schema::s390::Vcpu::Reader state);

// Checks the manifest is for s390x and has one entry per vCPU, then restores
// the VM state and every vCPU (RestoreVmConfig must have run already).
Status RestoreManifest(kvm::s390::Vm& vm, std::span<kvm::s390::Vcpu* const> vcpus,
                       schema::Manifest::Reader manifest, const Options& options = {});

// The same steps behind the arch-neutral restore order (restore/restore.h).
class S390Restorer final : public ArchRestorer {
 public:
  S390Restorer(kvm::s390::Vm& vm, Options options = {}) : vm_(vm), options_(options) {}
  void set_vcpus(std::vector<kvm::s390::Vcpu*> vcpus) { vcpus_ = std::move(vcpus); }
  Status RestoreVmConfig(schema::Manifest::Reader m) override {
    return s390x::RestoreVmConfig(vm_, m.getVm().getS390x());
  }
  Status RestoreState(schema::Manifest::Reader m) override { return RestoreManifest(vm_, vcpus_, m, options_); }

 private:
  kvm::s390::Vm& vm_;
  Options options_;
  std::vector<kvm::s390::Vcpu*> vcpus_;
};

}  // namespace vmsnap::restore::s390x
