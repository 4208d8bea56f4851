// SPDX-License-Identifier: MIT
// The arch-neutral restore driver: opens and checks a snapshot (and its
// parents), checks its architecture, and loads guest memory into the regions
// a VMM created for it.
#pragma once

#include <memory>
#include <span>
#include <string>

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
};

class EagerMemoryLoader final : public MemoryLoader {
 public:
  Status Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) override;
};

}  // namespace vmsnap::restore
