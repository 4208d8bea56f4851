// SPDX-License-Identifier: MIT
// ppc64 restore: the hashed page table (allocated at the saved size, then
// written through a KVM_GET_HTAB_WRITE fd as coalesced records of big-endian
// HPTEs) and each vCPU's registers, from the manifest's ppc64 structs.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
#include "restore/restore.h"
#include "kvm/ppc64/ppc64.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::restore::ppc64 {

struct Options {
  size_t write_buffer = 64 * 1024;  // bytes per write(), whole records only
};

// The HTAB stream that recreates `htab` exactly in a table of 2^shift bytes:
// runs of up to 0xffff valid entries, each followed by the run of up to
// 0xffff invalid entries before the next valid one, as the kernel's first
// read pass lays them out. Each element is one record (header and HPTEs).
std::vector<std::vector<uint8_t>> EncodeHtab(schema::ppc::Htab::Reader htab);

// Needs the vCPUs stopped (the kernel refuses HPT writes while they run).
Status RestoreHtab(kvm::ppc::Vm& vm, schema::ppc::Htab::Reader htab, const Options& options = {});
Status RestoreVcpu(kvm::ppc::Vcpu& vcpu, schema::ppc::Vcpu::Reader state);

// Checks the manifest is for ppc64 with one entry per vCPU; restores the HPT
// and then every vCPU.
Status RestoreManifest(kvm::ppc::Vm& vm, std::span<kvm::ppc::Vcpu* const> vcpus,
                       schema::Manifest::Reader manifest, const Options& options = {});

// The same steps behind the arch-neutral restore order (restore/restore.h).
// POWER has no VM configuration to replay before the vCPUs: the HPT is
// written with the rest of the state.
class PpcRestorer final : public ArchRestorer {
 public:
  PpcRestorer(kvm::ppc::Vm& vm, Options options = {}) : vm_(vm), options_(options) {}
  void set_vcpus(std::vector<kvm::ppc::Vcpu*> vcpus) { vcpus_ = std::move(vcpus); }
  Status RestoreVmConfig(schema::Manifest::Reader) override { return Status::Ok(); }
  Status RestoreState(schema::Manifest::Reader m) override { return RestoreManifest(vm_, vcpus_, m, options_); }

 private:
  kvm::ppc::Vm& vm_;
  Options options_;
  std::vector<kvm::ppc::Vcpu*> vcpus_;
};

}  // namespace vmsnap::restore::ppc64
