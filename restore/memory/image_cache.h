// SPDX-License-Identifier: MIT
// Decompressed images of snapshots, so that VMs loaded from a compressed or
// incremental snapshot can map its memory copy-on-write and share the page
// cache, as they do from a `--compress none` file (docs/performance.md,
// "Decompressed images").
//
// An image is the guest memory of a chain as of its leaf: the memory
// regions back to back in manifest order, zero pages left as holes. It is
// named by the leaf's snapshot id (which pins every layer's content), built
// by decoding every chunk with its checksums checked, and trusted later only
// while a stamp beside it matches: the boot it was built in, the state
// (device, inode, size, mtime, ctime) of every layer's file and of the image
// itself. Anything else (a snapshot file replaced or touched, an image
// written to, a reboot that may have lost unwritten pages) makes it stale,
// and a stale image is never mapped: it is rebuilt, or the pager is used.
#pragma once

#include <span>
#include <string>

#include "base/fd.h"
#include "base/status.h"
#include "format/chain.h"
#include "restore/memory/loader.h"

namespace vmsnap::memory {

class ImageCache {
 public:
  explicit ImageCache(std::string dir) : dir_(std::move(dir)) {}

  // The image file of `chain` (it may not exist).
  std::string ImagePath(const SnapshotChain& chain) const;
  // The chain's image, open, if it exists and its stamp matches; an invalid
  // fd if there is none or it is stale.
  UniqueFd OpenFresh(const SnapshotChain& chain) const;
  // Builds the image (replacing a stale one; VMs mapping the old one keep
  // it) and returns it open. Errors name the chunk that failed its checksum,
  // or the file that could not be written.
  Result<UniqueFd> Build(const SnapshotChain& chain) const;

 private:
  std::string dir_;
};

// Maps `image` (ImageCache's layout for `chain`) over `regions`,
// MAP_PRIVATE | MAP_FIXED: one mapping per region.
Status MapImage(const SnapshotChain& chain, int image, std::span<const GuestRegion> regions);

}  // namespace vmsnap::memory
