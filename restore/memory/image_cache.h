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
//
// An image open for use (OpenFresh, Build) holds a shared flock, which the
// VM's mapping keeps after the descriptor is closed: Trim and MakeRoom
// never remove an image while a VM maps it.
//
// Images are a cache and must not take a disk that other programs need: a
// build that would leave less than a tenth of the cache's filesystem free
// is refused before it writes anything (Room, Build).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

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
  // The file beside it that holds its stamp.
  std::string StampPath(const SnapshotChain& chain) const;
  // The chain's image, open, if it exists and its stamp matches; an invalid
  // fd if there is none or it is stale.
  UniqueFd OpenFresh(const SnapshotChain& chain) const;
  // Builds the image (replacing a stale one; VMs mapping the old one keep
  // it) and returns it open. Errors name the chunk that failed its checksum,
  // or the file that could not be written; kNoSpace, before anything is
  // written, when the image needs more than Room().
  Result<UniqueFd> Build(const SnapshotChain& chain) const;
  // The disk an image of `chain` takes at most: its stored pages (zero
  // pages are holes; a page stored by several layers is counted for each).
  static uint64_t ImageBytes(const SnapshotChain& chain);
  // What images may still add to the cache's filesystem while a tenth of it
  // stays free: its free bytes less a tenth of its size (negative when less
  // than a tenth is free). INT64_MAX when the filesystem cannot be asked.
  int64_t Room() const;
  // kNoSpace, saying what is missing, when `chain`'s image needs more than
  // Room().
  Status CheckRoom(const SnapshotChain& chain) const;
  // What MakeRoom did: CheckRoom's answer once it was done, the snapshot
  // ids whose images it removed, and those of the images it would have
  // removed but a VM maps (least recently used first).
  struct Made {
    Status room;
    std::vector<std::string> removed;
    std::vector<std::string> in_use;
  };
  // Room for `chain`'s image (CheckRoom), made by removing images as Trim
  // does (least recently used first, never one in use) until it fits.
  Made MakeRoom(const SnapshotChain& chain, const std::map<std::string, int64_t>& used_ns) const;
  // Removes what a Build of `chain` in process `pid` that was killed left
  // behind: its unfinished image and stamp temporaries.
  void RemoveUnfinished(const SnapshotChain& chain, pid_t pid) const;

  // Removes images, least recently used first, until the images left take
  // at most `max_bytes` of disk (their allocated blocks: zero pages are
  // holes). An image in use (mapped by a VM) is skipped, and so is the one
  // of snapshot id `keep`. The last use of an image is the later of when it
  // was stamped and `used_ns[snapshot id]` (ns since the epoch). Returns
  // the snapshot ids whose images it removed.
  std::vector<std::string> Trim(uint64_t max_bytes, const std::map<std::string, int64_t>& used_ns,
                                const std::string& keep) const;

 private:
  struct Entry {
    std::string id;  // the snapshot id, in hex
    uint64_t bytes;  // allocated blocks
    int64_t last;    // the later of its stamp's and its own mtime (ns since the epoch)
  };
  // The complete images in the directory.
  std::vector<Entry> Entries() const;
  // Removes images, least recently used first (see Trim), until those left
  // take at most `max_bytes` and at least `free_bytes` were removed; an
  // image in use is skipped (its id added to `in_use`, if given), and so
  // is `keep`. Returns the ids of the images removed.
  std::vector<std::string> Evict(uint64_t max_bytes, uint64_t free_bytes, const std::map<std::string, int64_t>& used_ns,
                                 const std::string& keep, std::vector<std::string>* in_use) const;
  // DIR/ID.EXT: an image (".img") or its stamp (".stamp").
  std::string EntryPath(const std::string& id, const char* ext) const { return dir_ + "/" + id + ext; }
  // Where Build in process `pid` writes an image before renaming it.
  static std::string BuildTemp(const std::string& image, pid_t pid) { return image + ".tmp-" + std::to_string(pid); }

  std::string dir_;
};

// Maps `image` (ImageCache's layout for `chain`) over `regions`,
// MAP_PRIVATE | MAP_FIXED: one mapping per region.
Status MapImage(const SnapshotChain& chain, int image, std::span<const GuestRegion> regions);

}  // namespace vmsnap::memory
