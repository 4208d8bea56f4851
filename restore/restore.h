// SPDX-License-Identifier: MIT
// The arch-neutral restore driver and the restore order: opens and checks a
// snapshot (and its parents), then has the VMM create the VM, its memory and
// its vCPUs and the architecture write its state, in the order
// docs/state-coverage.md gives the reasons for. Every architecture's restore
// is an ArchRestorer; every VMM restored into is a RestoreTarget.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "format/chain.h"
#include "base/status.h"
#include "kvm/kvm.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::restore {

// Opens SNAPSHOT and its parents; every layer is checked by the format reader.
Result<SnapshotChain> OpenSnapshot(const std::string& path);

// A snapshot for another architecture is refused before anything is created:
// "snapshot P is for s390x; this VMM restores x86_64 (wrong architecture)".
Status CheckArch(const SnapshotChain& chain, schema::Arch expected);

// Fills guest memory from the snapshot. Eager copies every page now; a lazy
// loader (mmap / userfaultfd) implements the same interface and maps instead.
class MemoryLoader {
 public:
  virtual ~MemoryLoader() = default;
  // `regions` were created to match the manifest's memory map and are zero.
  virtual Status Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) = 0;
  // The same, for a loader that may keep the chain past the call (a lazy one
  // pages from it while the VM runs) instead of opening it again.
  virtual Status LoadShared(std::shared_ptr<const SnapshotChain> chain,
                            std::span<const kvm::GuestRegion> regions) {
    return Load(*chain, regions);
  }
  // The restore failed after Load: stop every use of the regions now, since
  // the caller unmaps them next (a lazy loader's threads would fault).
  virtual void Abandon() {}
};

class EagerMemoryLoader final : public MemoryLoader {
 public:
  Status Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) override;
};

// Writes one architecture's state from a manifest into a new VM, a step at a
// time; RestoreInto calls the steps in order. One per architecture.
class ArchRestorer {
 public:
  virtual ~ArchRestorer() = default;
  // Before any memory exists: what this host must provide (e.g. the XSAVE
  // size), so a snapshot it cannot run is refused early.
  virtual Status CheckHost(schema::Manifest::Reader manifest) { return Status::Ok(); }
  // Before any vCPU exists: KVM refuses some VM configuration afterwards.
  virtual Status RestoreVmConfig(schema::Manifest::Reader manifest) = 0;
  // The vCPUs exist and never ran (`vcpus` by index, as the target created
  // them): what can be checked only on a vCPU (e.g. CPUID), and the state of
  // every vCPU and of the VM.
  virtual Status CheckVcpus(schema::Manifest::Reader manifest) { return Status::Ok(); }
  virtual Status RestoreState(schema::Manifest::Reader manifest) = 0;
};

// The VMM a snapshot is restored into: creates what the restore order needs,
// when it needs it.
class RestoreTarget {
 public:
  virtual ~RestoreTarget() = default;
  virtual schema::Arch arch() const = 0;
  virtual unsigned max_vcpus() const = 0;
  // Opens KVM and creates an empty VM; returns the restorer that writes into
  // it (owned by the target).
  virtual Result<ArchRestorer*> CreateVm() = 0;
  // Zeroed memory laid out as `layout`, not yet known to KVM; returns the
  // views a MemoryLoader fills.
  virtual Result<std::vector<kvm::GuestRegion>> CreateMemory(const std::vector<kvm::GuestRegion>& layout) = 0;
  // KVM_SET_USER_MEMORY_REGION for every region.
  virtual Status RegisterMemory() = 0;
  // What the VMM sets up once the VM configuration is in place (dirty tracking).
  virtual Status VmConfigured() { return Status::Ok(); }
  // Creates vCPUs 0..count-1 and hands them to the restorer.
  virtual Status CreateVcpus(unsigned count) = 0;
};

// The restore order: checks the snapshot before any KVM object exists, then
// VM, host checks, memory regions, slots (C0), VM configuration (C1-C4),
// memory contents (C6), vCPUs (C7), CPUID checks, and every vCPU's and the
// VM's state (steps 1-10). `loader` null: eager.
Status RestoreInto(std::shared_ptr<const SnapshotChain> chain, RestoreTarget& target, MemoryLoader* loader);

}  // namespace vmsnap::restore
