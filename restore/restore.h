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
  // As Abandon, for a caller that replaces the regions' memory right after
  // (a warm VM's restore cancelled): what was never filled need not be made
  // unreadable first.
  virtual void Discard() { Abandon(); }
};

class EagerMemoryLoader final : public MemoryLoader {
 public:
  Status Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) override;
};

// The state step in two halves, for a VMM that restores ahead of the
// guest's start (a warm VM bound to its likely snapshot): kUntimed is what
// means the same whenever the guest starts; kTimed is the rest (timers and
// clocks that run from the moment they are set), set at the start.
enum class StatePart { kAll, kUntimed, kTimed };

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
  // One half of RestoreState (kUntimed, then kTimed, give the same state as
  // kAll). An architecture that does not split it sets all at kTimed.
  virtual Status RestoreStatePart(schema::Manifest::Reader manifest, StatePart part) {
    if (part == StatePart::kUntimed) return Status::Ok();
    return RestoreState(manifest);
  }
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

// The restore order, one step at a time, for every way of restoring: the
// driver below takes all steps for a VMM that lets it create the VM, memory
// and vCPUs; the C API takes them one per call for a VMM that owns its own
// fds. Each step refuses to run out of turn ("... first"), so the order is
// written here only. Steps, in order:
//   CheckSnapshot  nothing exists yet: architecture, VM state, vCPU ids,
//                  memory map (layout());
//   CheckHost      what this host must provide, before memory exists;
//   ConfigureVm    caps, TSS/identity map, irqchip, PIT (C1-C4), before
//                  any vCPU; the VM's memory slots may come before or after;
//   LoadMemory     memory contents (C6) into regions matching layout(),
//                  before any vCPU exists;
//   RestoreState   the vCPUs exist and never ran: vCPU checks (CPUID), then
//                  every vCPU's and the VM's state.
// A failed step leaves the sequence where it was; after LoadMemory, a
// failed RestoreState stops the loader (Abandon) before the caller frees
// the memory.
class RestoreSteps {
 public:
  // Each step's `who` names the caller in its out-of-turn message (a C API
  // function, or "restore"); the ArchRestorer given to CheckHost is the
  // caller's and must outlive the steps.
  RestoreSteps(std::shared_ptr<const SnapshotChain> chain, schema::Arch arch, unsigned max_vcpus);

  Status CheckSnapshot();
  Status CheckHost(ArchRestorer& arch, const char* who);
  Status ConfigureVm(const char* who);
  Status LoadMemory(MemoryLoader& loader, std::span<const kvm::GuestRegion> regions, const char* who);
  // `vcpus_created`: how many vCPUs the caller made (must be the snapshot's).
  // After RestoreUntimedState, only the timed half is left to set.
  Status RestoreState(unsigned vcpus_created, const char* who);
  // The vCPU checks and the half of the state that does not depend on when
  // the guest starts (StatePart::kUntimed), between LoadMemory and
  // RestoreState.
  Status RestoreUntimedState(unsigned vcpus_created, const char* who);

  schema::Manifest::Reader manifest() const { return chain_->leaf().manifest(); }
  // The snapshot's memory map, dirty logging cleared (valid after CheckSnapshot).
  const std::vector<kvm::GuestRegion>& layout() const { return layout_; }
  unsigned vcpu_count() const { return vcpu_count_; }
  bool memory_loaded() const { return done_ >= Step::kMemory; }
  bool state_restored() const { return done_ >= Step::kState; }

 private:
  enum class Step { kNone, kChecked, kHostChecked, kConfigured, kMemory, kUntimed, kState };
  Status InTurn(Step before, const char* who, const char* step, const char* missing) const;
  // After LoadMemory: the vCPU checks, then all of the state or only its
  // untimed half; a failure stops the memory loader.
  Status FirstState(unsigned vcpus_created, const char* who, bool untimed_only);

  std::shared_ptr<const SnapshotChain> chain_;
  schema::Arch arch_;
  unsigned max_vcpus_;
  ArchRestorer* restorer_ = nullptr;
  MemoryLoader* loader_ = nullptr;
  std::vector<kvm::GuestRegion> layout_;
  unsigned vcpu_count_ = 0;
  Step done_ = Step::kNone;
};

// The restore order: checks the snapshot before any KVM object exists, then
// VM, host checks, memory regions, slots (C0), VM configuration (C1-C4),
// memory contents (C6), vCPUs (C7), CPUID checks, and every vCPU's and the
// VM's state (steps 1-10). `loader` null: eager.
Status RestoreInto(std::shared_ptr<const SnapshotChain> chain, RestoreTarget& target, MemoryLoader* loader);

}  // namespace vmsnap::restore
