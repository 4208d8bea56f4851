// SPDX-License-Identifier: MIT
// The arch-neutral restore driver: see restore.h.
#include "restore/restore.h"

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

Status EagerMemoryLoader::Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) {
  for (const kvm::GuestRegion& r : regions) {
    VMSNAP_RETURN_IF_ERROR(chain.ReadMemory(r.gpa, r.size, r.host).Context("loading memory region " + r.name));
  }
  return Status::Ok();
}

}  // namespace vmsnap::restore
