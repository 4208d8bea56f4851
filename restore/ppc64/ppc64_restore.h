// SPDX-License-Identifier: MIT
// ppc64 restore: the hashed page table (allocated at the saved size, then
// written through a KVM_GET_HTAB_WRITE fd as coalesced records of big-endian
// HPTEs) and each vCPU's registers, from the manifest's ppc64 structs.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/status.h"
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

}  // namespace vmsnap::restore::ppc64
