// SPDX-License-Identifier: MIT
// restore::MemoryLoader adapters over LoadEager and LazyPager.
#include "restore/memory/vmm_loader.h"

#include "format/layout.h"

namespace vmsnap::memory {

Status ParallelEagerLoader::Load(const SnapshotChain& chain,
                                 std::span<const kvm::GuestRegion> regions) {
  return LoadEager(chain, regions, options_);
}

Status LazyLoader::Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) {
  Stop();
  auto own = SnapshotChain::Open(chain.leaf().path());
  if (!own.ok()) return own.status();
  if (own.value().leaf().id() != chain.leaf().id() ||
      own.value().layers().size() != chain.layers().size()) {
    return Status::Corruption("snapshot " + chain.leaf().path() +
                              " changed while it was being loaded (snapshot id " +
                              layout::IdToHex(own.value().leaf().id()) + ", expected " +
                              layout::IdToHex(chain.leaf().id()) + ")");
  }
  return LoadShared(std::make_shared<const SnapshotChain>(std::move(own).value()), regions);
}

Status LazyLoader::LoadShared(std::shared_ptr<const SnapshotChain> chain,
                              std::span<const kvm::GuestRegion> regions) {
  Stop();
  chain_ = std::move(chain);
  mapped_ = false;
  if (map_raw_) {
    // Refused before anything is mapped when the file is not all raw.
    Status s = MapCopyOnWrite(*chain_, regions);
    if (s.ok()) {
      mapped_ = true;
      return s;
    }
    if (s.code() != Code::kUnsupported) {
      chain_.reset();
      return s;
    }
  }
  auto pager = LazyPager::Start(*chain_, regions, options_);
  if (!pager.ok()) {
    chain_.reset();
    return pager.status();
  }
  pager_ = std::move(pager).value();
  return Status::Ok();
}

}  // namespace vmsnap::memory
