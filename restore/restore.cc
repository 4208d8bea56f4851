// SPDX-License-Identifier: MIT
// The arch-neutral restore driver: see restore.h.
#include "restore/restore.h"

#include <linux/kvm.h>

#include "base/arch.h"

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

Status RestoreInto(std::shared_ptr<const SnapshotChain> shared, RestoreTarget& target, MemoryLoader* loader) {
  // The snapshot is checked before any KVM object exists, so a bad or
  // foreign snapshot fails the same way on any host.
  const SnapshotChain& chain = *shared;
  const std::string& path = chain.leaf().path();
  VMSNAP_RETURN_IF_ERROR(CheckArch(chain, target.arch()));
  schema::Manifest::Reader m = chain.leaf().manifest();
  if (!HasVmState(m, target.arch())) {
    return Status::Corruption("snapshot " + path + " has no " + ArchName(target.arch()) + " VM state");
  }
  auto vcpus = m.getVcpus();
  if (vcpus.size() == 0 || vcpus.size() > target.max_vcpus()) {
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

  VMSNAP_ASSIGN_OR_RETURN(ArchRestorer * arch, target.CreateVm());
  // Refuse, before anything runs, a snapshot this host cannot provide for.
  VMSNAP_RETURN_IF_ERROR(arch->CheckHost(m));
  VMSNAP_ASSIGN_OR_RETURN(std::vector<kvm::GuestRegion> views, target.CreateMemory(layout));
  // C0 before C1-C4: the first slot change after the irqchip exists is slow
  // (docs/state-coverage.md); nothing in the VM configuration needs the
  // slots to come later.
  VMSNAP_RETURN_IF_ERROR(target.RegisterMemory());
  // C1-C4: caps, TSS/identity map, irqchip, PIT must exist before vCPUs.
  VMSNAP_RETURN_IF_ERROR(arch->RestoreVmConfig(m));
  VMSNAP_RETURN_IF_ERROR(target.VmConfigured());
  // C6: memory before any vCPU state, so nothing can run against empty RAM.
  EagerMemoryLoader eager;
  MemoryLoader* load = loader ? loader : &eager;
  // From here a loader may still be writing into the regions (a lazy one's
  // background fill): a failed step stops it before the caller frees them.
  Status s = load->LoadShared(shared, views);
  // C7, then the checks that need a vCPU that never ran.
  if (s.ok()) s = target.CreateVcpus(vcpus.size());
  if (s.ok()) s = arch->CheckVcpus(m);
  if (s.ok()) s = arch->RestoreState(m);
  if (!s.ok()) load->Abandon();
  return s;
}

Status EagerMemoryLoader::Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) {
  for (const kvm::GuestRegion& r : regions) {
    VMSNAP_RETURN_IF_ERROR(chain.ReadMemory(r.gpa, r.size, r.host).Context("loading memory region " + r.name));
  }
  return Status::Ok();
}

}  // namespace vmsnap::restore
