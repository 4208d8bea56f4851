// SPDX-License-Identifier: MIT
// The arch-neutral restore driver: see restore.h.
#include "restore/restore.h"

#include <linux/kvm.h>

#include "base/arch.h"
#include "base/hex.h"

namespace vmsnap::restore {

Result<SnapshotChain> OpenSnapshot(const std::string& path) { return SnapshotChain::Open(path); }

Status CheckArch(const SnapshotChain& chain, schema::Arch expected) {
  schema::Arch got = chain.leaf().manifest().getArch();
  if (got != expected) {
    return Status::WrongArch("snapshot " + chain.leaf().path() + " is for " + ArchName(got) +
                             "; this VMM restores " + ArchName(expected) + " (wrong architecture)");
  }
  return Status::Ok();
}

namespace {

bool HasVmState(schema::Manifest::Reader m, schema::Arch arch) {
  switch (arch) {
    case schema::Arch::X8664: return m.getVm().isX8664();
    case schema::Arch::S390X: return m.getVm().isS390x();
    case schema::Arch::PPC64: return m.getVm().isPpc64();
    case schema::Arch::AARCH64: return m.getVm().isAarch64();
  }
  return false;
}

}  // namespace

RestoreSteps::RestoreSteps(std::shared_ptr<const SnapshotChain> chain, schema::Arch arch, unsigned max_vcpus)
    : chain_(std::move(chain)), arch_(arch), max_vcpus_(max_vcpus) {}

Status RestoreSteps::InTurn(Step before, const char* who, const char* step, const char* missing) const {
  if (done_ == before) return Status::Ok();
  if (done_ > before) return Status::InvalidArgument(std::string(who) + ": " + step + " was done already");
  return Status::InvalidArgument(std::string(who) + ": " + missing + " first");
}

Status RestoreSteps::CheckSnapshot() {
  // The snapshot is checked before any KVM object exists, so a bad or
  // foreign snapshot fails the same way on any host.
  if (done_ != Step::kNone) return Status::InvalidArgument("restore: the snapshot was checked already");
  const std::string& path = chain_->leaf().path();
  VMSNAP_RETURN_IF_ERROR(CheckArch(*chain_, arch_));
  schema::Manifest::Reader m = manifest();
  if (!HasVmState(m, arch_)) {
    return Status::Corruption("snapshot " + path + " has no " + ArchName(arch_) + " VM state");
  }
  auto vcpus = m.getVcpus();
  if (vcpus.size() == 0 || vcpus.size() > max_vcpus_) {
    return Status::Corruption("snapshot " + path + " has " + std::to_string(vcpus.size()) + " vCPUs");
  }
  for (unsigned i = 0; i < vcpus.size(); ++i) {
    if (vcpus[i].getId() != i) return Status::Corruption("snapshot vCPU ids are not 0..n-1");
  }
  std::vector<kvm::GuestRegion> layout;
  for (auto r : m.getMemory().getRegions()) {
    kvm::GuestRegion g;
    g.slot = r.getSlot();
    g.gpa = r.getGuestPhysAddr();
    g.size = r.getSize();
    // Dirty logging is the old VMM's business; the new one enables it when it
    // needs it.
    g.flags = r.getFlags() & ~static_cast<uint32_t>(KVM_MEM_LOG_DIRTY_PAGES);
    g.name = r.getName();
    layout.push_back(g);
  }
  if (layout.empty()) return Status::Corruption("snapshot " + path + " has no memory regions");
  layout_ = std::move(layout);
  vcpu_count_ = vcpus.size();
  done_ = Step::kChecked;
  return Status::Ok();
}

Status RestoreSteps::CheckHost(ArchRestorer& arch, const char* who) {
  VMSNAP_RETURN_IF_ERROR(InTurn(Step::kChecked, who, "the host check", "check the snapshot"));
  // Refuse, before anything runs, a snapshot this host cannot provide for.
  VMSNAP_RETURN_IF_ERROR(arch.CheckHost(manifest()));
  restorer_ = &arch;
  done_ = Step::kHostChecked;
  return Status::Ok();
}

Status RestoreSteps::ConfigureVm(const char* who) {
  VMSNAP_RETURN_IF_ERROR(InTurn(Step::kHostChecked, who, "the VM configuration", "check the host"));
  VMSNAP_RETURN_IF_ERROR(restorer_->RestoreVmConfig(manifest()));
  done_ = Step::kConfigured;
  return Status::Ok();
}

Status RestoreSteps::LoadMemory(MemoryLoader& loader, std::span<const kvm::GuestRegion> regions, const char* who) {
  VMSNAP_RETURN_IF_ERROR(InTurn(Step::kConfigured, who, "loading memory", "restore the VM configuration"));
  // The regions must be the snapshot's memory map, region for region.
  if (regions.size() != layout_.size()) {
    return Status::InvalidArgument(std::string(who) + ": snapshot " + chain_->leaf().path() + " has " +
                                   std::to_string(layout_.size()) + " memory regions, the VM " +
                                   std::to_string(regions.size()));
  }
  for (const kvm::GuestRegion& want : layout_) {
    bool found = false;
    for (const kvm::GuestRegion& g : regions) found |= g.gpa == want.gpa && g.size == want.size;
    if (!found) {
      return Status::InvalidArgument(std::string(who) + ": the snapshot's region at " + Hex(want.gpa) + " (" +
                                     std::to_string(want.size) + " bytes) has no matching region in the VM");
    }
  }
  // From here a loader may be writing into the regions (a lazy one's
  // background fill): a failed step stops it before the caller frees them.
  Status s = loader.LoadShared(chain_, regions);
  if (!s.ok()) {
    loader.Abandon();
    return s;
  }
  loader_ = &loader;
  done_ = Step::kMemory;
  return Status::Ok();
}

Status RestoreSteps::RestoreState(unsigned vcpus_created, const char* who) {
  if (done_ == Step::kUntimed) {
    Status s = restorer_->RestoreStatePart(manifest(), StatePart::kTimed);
    if (!s.ok()) {
      loader_->Abandon();
      return s;
    }
    done_ = Step::kState;
    return Status::Ok();
  }
  return FirstState(vcpus_created, who, /*untimed_only=*/false);
}

Status RestoreSteps::RestoreUntimedState(unsigned vcpus_created, const char* who) {
  return FirstState(vcpus_created, who, /*untimed_only=*/true);
}

Status RestoreSteps::FirstState(unsigned vcpus_created, const char* who, bool untimed_only) {
  VMSNAP_RETURN_IF_ERROR(InTurn(Step::kMemory, who, "restoring the state", "load the memory"));
  Status s;
  if (vcpus_created != vcpu_count_) {
    s = Status::InvalidArgument(std::string(who) + ": snapshot " + chain_->leaf().path() + " has " +
                                std::to_string(vcpu_count_) + " vCPUs, the VM " + std::to_string(vcpus_created));
  }
  // The checks that need a vCPU that never ran, then the state.
  if (s.ok()) s = restorer_->CheckVcpus(manifest());
  if (s.ok()) {
    s = untimed_only ? restorer_->RestoreStatePart(manifest(), StatePart::kUntimed)
                     : restorer_->RestoreState(manifest());
  }
  if (!s.ok()) {
    loader_->Abandon();
    return s;
  }
  done_ = untimed_only ? Step::kUntimed : Step::kState;
  return Status::Ok();
}

Status RestoreInto(std::shared_ptr<const SnapshotChain> shared, RestoreTarget& target, MemoryLoader* loader) {
  RestoreSteps steps(std::move(shared), target.arch(), target.max_vcpus());
  VMSNAP_RETURN_IF_ERROR(steps.CheckSnapshot());
  VMSNAP_ASSIGN_OR_RETURN(ArchRestorer * arch, target.CreateVm());
  VMSNAP_RETURN_IF_ERROR(steps.CheckHost(*arch, "restore"));
  VMSNAP_ASSIGN_OR_RETURN(std::vector<kvm::GuestRegion> views, target.CreateMemory(steps.layout()));
  // C0 before C1-C4: the first slot change after the irqchip exists is slow
  // (docs/state-coverage.md); nothing in the VM configuration needs the
  // slots to come later.
  VMSNAP_RETURN_IF_ERROR(target.RegisterMemory());
  VMSNAP_RETURN_IF_ERROR(steps.ConfigureVm("restore"));
  VMSNAP_RETURN_IF_ERROR(target.VmConfigured());
  EagerMemoryLoader eager;
  MemoryLoader& load = loader ? *loader : eager;
  VMSNAP_RETURN_IF_ERROR(steps.LoadMemory(load, views, "restore"));
  Status s = target.CreateVcpus(steps.vcpu_count());
  if (!s.ok()) {
    load.Abandon();
    return s;
  }
  return steps.RestoreState(steps.vcpu_count(), "restore");
}

Status EagerMemoryLoader::Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) {
  for (const kvm::GuestRegion& r : regions) {
    VMSNAP_RETURN_IF_ERROR(chain.ReadMemory(r.gpa, r.size, r.host).Context("loading memory region " + r.name));
  }
  return Status::Ok();
}

}  // namespace vmsnap::restore
