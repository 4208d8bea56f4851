// SPDX-License-Identifier: MIT
// The decompressed images a `serve` server builds of the snapshots its
// clients ask for, one at a time, each in a forked process at the lowest
// CPU priority: warm starts of a snapshot whose image is fresh map it (one
// mapping per region, nothing decoded or faulted in from the file on the
// way to the guest's first instruction) where they would otherwise page it
// in, or map a raw file run by run (thousands of mappings per GiB where
// zero pages cut it). The build is off the request path: the worker that
// asked has its client already; the ones forked after the image is stamped
// find it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/fd.h"
#include "format/chain.h"
#include "restore/memory/image_cache.h"

namespace vmsnap::vmm {

class ImageBuilder {
 public:
  // `max_bytes` (0: no bound) bounds the images in `dir`: see Trim.
  ImageBuilder(std::string dir, uint64_t max_bytes);
  ~ImageBuilder() { Stop(); }

  // Queues `chain` unless its image is fresh, it is queued or being built,
  // or a build of its files in their present state was already tried.
  void Want(std::shared_ptr<const SnapshotChain> chain);

  // The descriptor to poll while a build runs (it hangs up when the build
  // ends), or -1.
  int fd() const { return done_.get(); }

  // Called when fd() is readable or hung up: that build ended.
  void Ended();

  // Asked of the server when images a VM maps are in the way of a build
  // (snapshot ids, least recently used first): whether idle warm VMs bound
  // to any of them were asked to let them go, and have not yet answered.
  using ReleaseFn = std::function<bool(const std::vector<std::string>& image_ids)>;

  // Forks the next build if none runs. `close_in_child` closes what the
  // server holds (client connections, worker channels) in the builder.
  // A build short of room waits while `release` says VMs are letting go of
  // images in its way, and is tried again at the next call.
  void Next(const std::function<void()>& close_in_child, const ReleaseFn& release);

  // Whether a build waits for idle VMs to let go of images (see Next):
  // none should be bound to an image meanwhile.
  bool making_room() const { return waiting_ != nullptr; }

  // Ends a build in progress and removes its unfinished files.
  void Stop();

 private:
  // Room for `chain`'s image with a tenth of the filesystem kept free
  // (ImageCache::MakeRoom): the least recently requested images make way,
  // but none a VM maps. When mapped ones are in the way, `release` is asked
  // to free them: kWait while it does. kNo, said once on stderr, when even
  // that is not enough: the snapshot is paged in, as without images.
  enum class Room { kYes, kWait, kNo };
  Room MakeRoom(const SnapshotChain& chain, const ReleaseFn& release);

  // With a bound: the least recently requested images go, but none a VM
  // maps and not the one just built (ImageCache::Trim), at start and after
  // each build. A removed image is built again at its next request.
  void Trim(const std::string& built);

  memory::ImageCache cache_;
  bool on_;
  uint64_t max_bytes_;
  std::map<std::string, int64_t> used_;  // when clients last asked for it (ns since the epoch), by snapshot id
  std::deque<std::shared_ptr<const SnapshotChain>> queue_;
  std::map<std::string, std::string> tried_;  // FileStamp of the leaf, by snapshot id
  pid_t pid_ = -1;
  UniqueFd done_;
  std::shared_ptr<const SnapshotChain> building_;
  std::shared_ptr<const SnapshotChain> waiting_;  // the next build, while VMs let go of images
};

}  // namespace vmsnap::vmm
