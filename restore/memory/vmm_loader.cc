// SPDX-License-Identifier: MIT
// restore::MemoryLoader adapters over LoadEager and LazyPager.
#include "restore/memory/vmm_loader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <optional>

#include "base/cache_dir.h"
#include "format/layout.h"
#include "restore/memory/image_cache.h"

namespace vmsnap::memory {

Status ParallelEagerLoader::Load(const SnapshotChain& chain,
                                 std::span<const kvm::GuestRegion> regions) {
  return LoadEager(chain, regions, options_);
}

Status LazyLoader::Load(const SnapshotChain& chain, std::span<const kvm::GuestRegion> regions) {
  // An armed pager waits for this load (it is dropped if the load fails
  // here); what an earlier load started does not.
  StopLoad();
  auto own = SnapshotChain::Open(chain.leaf().path());
  if (!own.ok()) {
    armed_.reset();
    return own.status();
  }
  if (own.value().leaf().id() != chain.leaf().id() ||
      own.value().layers().size() != chain.layers().size()) {
    armed_.reset();
    return Status::Corruption("snapshot " + chain.leaf().path() +
                              " changed while it was being loaded (snapshot id " +
                              layout::IdToHex(own.value().leaf().id()) + ", expected " +
                              layout::IdToHex(chain.leaf().id()) + ")");
  }
  return LoadShared(std::make_shared<const SnapshotChain>(std::move(own).value()), regions);
}

namespace {

// Mappings a raw file may need before a decompressed image is preferred
// (when one may be built), and before the pager is (when not).
constexpr uint64_t kCheapMappings = 256;
constexpr uint64_t kMaxMappings = 16384;

// One layer, every chunk raw: what MapCopyOnWrite can map.
bool MappableRaw(const SnapshotChain& chain) {
  if (chain.layers().size() != 1) return false;
  for (const ChunkInfo& c : chain.leaf().chunk_index()) {
    if (c.compressed) return false;
  }
  return true;
}

std::string StampOf(const struct stat& st) { return FileStamp(st) + "\n"; }

// Verifies the snapshot file unless `stamp_dir` remembers it verified in
// exactly its present state; remembers a success there (best effort).
Status VerifiedOnce(const SnapshotReader& r, const std::string& stamp_dir) {
  struct stat st {};
  if (::stat(r.path().c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + r.path());
  const std::string stamp = StampOf(st);
  const std::string file = stamp_dir.empty() ? "" : stamp_dir + "/" + layout::IdToHex(r.id());
  if (!file.empty()) {
    std::ifstream in(file);
    std::string line;
    if (std::getline(in, line) && line + "\n" == stamp) return Status::Ok();
  }
  VMSNAP_RETURN_IF_ERROR(r.VerifyAll());
  if (!file.empty()) {
    (void)ReplaceSmallFile(file, stamp);  // a cache: a failure costs a verify next time
  }
  return Status::Ok();
}

}  // namespace

Status LazyLoader::LoadShared(std::shared_ptr<const SnapshotChain> chain,
                              std::span<const kvm::GuestRegion> regions) {
  std::unique_ptr<LazyPager> armed = std::move(armed_);
  StopLoad();
  chain_ = std::move(chain);
  mapped_ = false;
  auto fail = [this, &armed](Status s) {
    armed.reset();
    chain_.reset();
    return s;
  };
  // Before a mapping: the zero pages between mapped runs must fault as
  // ordinary memory. The pager is kept (idle) until the VM ends: freeing
  // it would cost more than the unregister on the way to the guest's first
  // instruction.
  auto let_go = [this, &armed] {
    if (!armed) return;
    armed->Disarm();
    armed_ = std::move(armed);
  };
  // In order: a fresh decompressed image (one mapping per region); the raw
  // file itself (one mapping per run of stored pages); an image built now,
  // when asked for and the file cannot be mapped cheaply; the pager.
  std::optional<ImageCache> cache;
  if (map_raw_ && !image_dir_.empty()) cache.emplace(image_dir_);
  UniqueFd image;
  if (cache) image = cache->OpenFresh(*chain_);
  if (!image.valid() && map_raw_ && MappableRaw(*chain_)) {
    // A mapped page reaches the guest unchecked: the file is checked first.
    Status v = VerifiedOnce(chain_->leaf(), stamp_dir_);
    if (!v.ok()) return fail(v);
    // A file whose stored runs are many (zero pages between them) costs a
    // mapping each, thousands for a GiB: with an image to be built, that
    // is mapped instead.
    const uint64_t most = cache && build_images_ ? kCheapMappings : kMaxMappings;
    Status s = MapCopyOnWrite(*chain_, regions, most, let_go);
    if (s.ok()) {
      mapped_ = true;
      return s;
    }
    if (s.code() != Code::kUnsupported) return fail(s);
  }
  if (!image.valid() && cache && build_images_) {
    auto built = cache->Build(*chain_);
    if (!built.ok()) return fail(built.status());
    image = std::move(built).value();
  }
  if (image.valid()) {
    let_go();
    Status s = MapImage(*chain_, image.get(), regions);
    if (!s.ok()) return fail(s);
    mapped_ = true;
    return s;
  }
  if (armed) {
    // Armed while the VM waited: only the snapshot is new.
    Status s = armed->Begin(*chain_, regions, options_);
    if (s.ok()) {
      pager_ = std::move(armed);
      return s;
    }
    armed.reset();  // other regions: armed for nothing; start afresh
  }
  auto pager = LazyPager::Start(*chain_, regions, options_);
  if (!pager.ok()) return fail(pager.status());
  pager_ = std::move(pager).value();
  return Status::Ok();
}

}  // namespace vmsnap::memory
