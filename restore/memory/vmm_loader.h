// SPDX-License-Identifier: MIT
// The memory loaders behind the VMM's restore::MemoryLoader seam, for
// `vmsnap load --memory eager|lazy`.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>

#include "format/chain.h"
#include "restore/memory/loader.h"
#include "restore/restore.h"

namespace vmsnap::memory {

// All cores decode into guest memory before the vCPUs start.
class ParallelEagerLoader final : public restore::MemoryLoader {
 public:
  explicit ParallelEagerLoader(EagerOptions options = {}) : options_(std::move(options)) {}
  Status Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) override;

 private:
  EagerOptions options_;
};

// Registers guest memory with userfaultfd and returns at once; the pager runs
// until every page is in, or until Stop(). LoadShared keeps the caller's
// chain; Load, whose chain is not kept past the call, opens its own copy of
// the same snapshot (checked to be the same file by snapshot id). Keep the
// loader alive while the VM runs and call Stop() before guest memory is
// unmapped.
//
// A snapshot whose memory is one layer stored raw and page-aligned
// (`--compress none`) is mapped copy-on-write from its file instead
// (MapCopyOnWrite): nothing is read or copied before the guest touches it, and
// every VM loaded from that file shares its page cache until it writes.
// Before the first such mapping the whole file is verified (every chunk's
// checksum, as `vmsnap verify` does); with a stamp directory the success is
// remembered there under the snapshot id, with the file's device, inode,
// size, mtime and ctime, so later loads of the unchanged file map it at once
// and any change to it (which moves its ctime) verifies it again. Without a
// stamp directory every load verifies. `map_raw = false` pages through the
// pager instead, which checks each block as it fills it.
class LazyLoader final : public restore::MemoryLoader {
 public:
  explicit LazyLoader(LazyOptions options = {}, bool map_raw = true)
      : options_(std::move(options)), map_raw_(map_raw) {}
  ~LazyLoader() override { Stop(); }
  Status Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) override;
  Status LoadShared(std::shared_ptr<const SnapshotChain> chain,
                    std::span<const kvm::GuestRegion> regions) override;
  // Stops the pager's threads (pages never filled are poisoned, see LazyPager).
  void Stop() {
    StopLoad();
    armed_.reset();
  }
  void Abandon() override { Stop(); }
  void Discard() override {
    if (pager_) pager_->SkipFence();
    Stop();
  }
  LazyPager* pager() { return pager_.get(); }
  // Where verified files are remembered (empty: verify on every load).
  void set_stamp_dir(std::string dir) { stamp_dir_ = std::move(dir); }
  // Where decompressed images live (image_cache.h; empty: none). A snapshot
  // with a fresh image there is mapped from it (one mapping per region);
  // with `build`, one is built first when there is none for a snapshot that
  // cannot be mapped itself (compressed, a chain) or only at the cost of
  // many mappings (a raw file whose zero pages cut its stored pages into
  // more than 256 runs).
  void set_image_dir(std::string dir, bool build) {
    image_dir_ = std::move(dir);
    build_images_ = build;
  }
  // A pager armed for these regions ahead of the load (LazyPager::Arm): a
  // load that pages takes it (unless its regions differ); one that maps a
  // file or an image disarms it before mapping and keeps it, idle, until
  // Stop (also when the mapping then fails); one that fails before that
  // drops it.
  void set_armed(std::unique_ptr<LazyPager> armed) { armed_ = std::move(armed); }
  // Whether the last load mapped the file (or its image) instead of
  // starting the pager.
  bool mapped() const { return mapped_; }

 private:
  // Ends the last load's pager and chain; an armed pager stays for the next.
  void StopLoad() {
    pager_.reset();
    chain_.reset();
  }

  LazyOptions options_;
  bool map_raw_ = true;
  bool mapped_ = false;
  std::string stamp_dir_;
  std::string image_dir_;
  bool build_images_ = false;
  std::shared_ptr<const SnapshotChain> chain_;
  std::unique_ptr<LazyPager> pager_;
  std::unique_ptr<LazyPager> armed_;
};

}  // namespace vmsnap::memory
