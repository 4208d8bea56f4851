// SPDX-License-Identifier: MIT
// restore::MemoryLoader adapters over LoadEager and LazyPager.
#include "restore/memory/vmm_loader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "format/layout.h"
#include "restore/memory/image_cache.h"

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

namespace {

// One layer, every chunk raw: what MapCopyOnWrite can map.
bool MappableRaw(const SnapshotChain& chain) {
  if (chain.layers().size() != 1) return false;
  for (const ChunkInfo& c : chain.leaf().chunk_index()) {
    if (c.compressed) return false;
  }
  return true;
}

std::string StampOf(const struct stat& st) {
  return std::to_string(st.st_dev) + " " + std::to_string(st.st_ino) + " " + std::to_string(st.st_size) + " " +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + " " +
         std::to_string(st.st_ctim.tv_sec) + "." + std::to_string(st.st_ctim.tv_nsec) + "\n";
}

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
    const std::string tmp = file + ".tmp-" + std::to_string(::getpid());
    std::ofstream(tmp) << stamp;
    if (::rename(tmp.c_str(), file.c_str()) != 0) ::unlink(tmp.c_str());
  }
  return Status::Ok();
}

}  // namespace

Status LazyLoader::LoadShared(std::shared_ptr<const SnapshotChain> chain,
                              std::span<const kvm::GuestRegion> regions) {
  Stop();
  chain_ = std::move(chain);
  mapped_ = false;
  if (map_raw_ && MappableRaw(*chain_)) {
    // A mapped page reaches the guest unchecked: the file is checked first.
    Status v = VerifiedOnce(chain_->leaf(), stamp_dir_);
    if (!v.ok()) {
      chain_.reset();
      return v;
    }
    Status s = MapCopyOnWrite(*chain_, regions);
    if (s.ok()) {
      mapped_ = true;
      return s;
    }
    if (s.code() != Code::kUnsupported) {
      chain_.reset();
      return s;
    }
  } else if (map_raw_ && !image_dir_.empty()) {
    ImageCache cache(image_dir_);
    UniqueFd image = cache.OpenFresh(*chain_);
    if (!image.valid() && build_images_) {
      auto built = cache.Build(*chain_);
      if (!built.ok()) {
        chain_.reset();
        return built.status();
      }
      image = std::move(built).value();
    }
    if (image.valid()) {
      Status s = MapImage(*chain_, image.get(), regions);
      if (!s.ok()) {
        chain_.reset();
        return s;
      }
      mapped_ = true;
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
