// SPDX-License-Identifier: MIT
// See image_cache.h.
#include "restore/memory/image_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <vector>

#include "base/cache_dir.h"
#include "base/hex.h"
#include "base/mapping.h"
#include "format/layout.h"

namespace vmsnap::memory {
namespace {

std::string StateLine(const char* what, const struct stat& st) {
  return std::string(what) + " " + FileStamp(st) + "\n";
}

std::string BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

// The stamp of `chain` with image `image_fd`, or "" when a file cannot be
// stat'ed (then nothing is trusted).
std::string Stamp(const SnapshotChain& chain, int image_fd) {
  std::string s = "boot " + BootId() + "\n";
  for (const auto& layer : chain.layers()) {
    struct stat st {};
    if (::stat(layer->path().c_str(), &st) != 0) return "";
    s += StateLine("layer", st);
  }
  struct stat st {};
  if (::fstat(image_fd, &st) != 0) return "";
  return s + StateLine("image", st);
}

// Region r of the manifest starts at the sum of the sizes before it.
struct Placed {
  uint64_t gpa, size, offset;
};

std::vector<Placed> Layout(const SnapshotChain& chain, uint64_t* total) {
  std::vector<Placed> out;
  uint64_t off = 0;
  for (auto r : chain.leaf().manifest().getMemory().getRegions()) {
    out.push_back(Placed{r.getGuestPhysAddr(), r.getSize(), off});
    off += r.getSize();
  }
  *total = off;
  return out;
}

}  // namespace

std::string ImageCache::ImagePath(const SnapshotChain& chain) const {
  return EntryPath(layout::IdToHex(chain.leaf().id()), ".img");
}

std::string ImageCache::StampPath(const SnapshotChain& chain) const {
  return EntryPath(layout::IdToHex(chain.leaf().id()), ".stamp");
}

UniqueFd ImageCache::OpenFresh(const SnapshotChain& chain) const {
  const std::string img = ImagePath(chain);
  UniqueFd fd(::open(img.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return UniqueFd();
  // Held by the mapping: Trim and MakeRoom leave the image alone. It fails
  // only while one of them removes this image (then it is not used).
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) != 0) return UniqueFd();
  std::ifstream in(StampPath(chain));
  std::stringstream want;
  want << in.rdbuf();
  const std::string have = Stamp(chain, fd.get());
  if (have.empty() || want.str() != have) return UniqueFd();
  return fd;
}

void ImageCache::RemoveUnfinished(const SnapshotChain& chain, pid_t pid) const {
  const std::string img = ImagePath(chain);
  ::unlink(BuildTemp(img, pid).c_str());
  // The stamp's temporaries (ReplaceSmallFile's, one per call).
  const std::string stamp_tmp = SmallFileTempPrefix(StampPath(chain), pid).substr(dir_.size() + 1);
  if (DIR* d = ::opendir(dir_.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (std::string_view(e->d_name).starts_with(stamp_tmp)) ::unlink((dir_ + "/" + e->d_name).c_str());
    }
    ::closedir(d);
  }
}

uint64_t ImageCache::ImageBytes(const SnapshotChain& chain) {
  uint64_t bytes = 0;  // a chunk's raw bytes are its stored pages
  for (const auto& layer : chain.layers()) {
    for (const ChunkInfo& c : layer->chunk_index()) bytes += c.raw_length;
  }
  return bytes;
}

int64_t ImageCache::Room() const {
  struct statvfs fs {};
  if (::statvfs(dir_.c_str(), &fs) != 0) return INT64_MAX;
  const uint64_t size = uint64_t(fs.f_blocks) * fs.f_frsize;
  const uint64_t avail = uint64_t(fs.f_bavail) * fs.f_frsize;
  return int64_t(avail) - int64_t(size / 10);
}

Status ImageCache::CheckRoom(const SnapshotChain& chain) const {
  const uint64_t need = ImageBytes(chain);
  const int64_t room = Room();
  if (room >= int64_t(need)) return Status::Ok();
  return Status::NoSpace("no image of " + chain.leaf().path() + ": it needs " + std::to_string(need >> 20) +
                         " MiB, and " + dir_ + " has " + std::to_string(room > 0 ? room >> 20 : 0) +
                         " MiB free beyond the tenth of its filesystem kept free");
}

Result<UniqueFd> ImageCache::Build(const SnapshotChain& chain) const {
  VMSNAP_RETURN_IF_ERROR(CheckRoom(chain));
  const std::string img = ImagePath(chain);
  const std::string tmp = BuildTemp(img, ::getpid());
  uint64_t total = 0;
  const std::vector<Placed> placed = Layout(chain, &total);
  UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return Status::FromErrno(errno, "create " + tmp);
  auto fail = [&](Status s) {
    ::unlink(tmp.c_str());
    return s;
  };
  if (::ftruncate(fd.get(), off_t(total)) != 0) return fail(Status::FromErrno(errno, "ftruncate " + tmp));
  // Space for every stored page, reserved before any is written: a write
  // through the mapping into a hole on a full disk would be a SIGBUS. Zero
  // pages stay holes.
  const uint32_t ps = chain.leaf().page_size();
  for (const auto& layer : chain.layers()) {
    for (const ChunkInfo& c : layer->chunk_index()) {
      if (c.raw_length == 0) continue;
      const Placed* p = nullptr;
      for (const Placed& q : placed) {
        if (c.gpa >= q.gpa && c.end(ps) <= q.gpa + q.size) p = &q;
      }
      if (p == nullptr) continue;  // LoadEager reports it
      int e = 0;
      c.ForEachPresentRun([&](uint32_t first, uint32_t count, uint32_t) {
        e = ::posix_fallocate(fd.get(), off_t(p->offset + (c.gpa - p->gpa) + uint64_t(first) * ps),
                              off_t(uint64_t(count) * ps));
        return e == 0;
      });
      if (e != 0) return fail(Status::FromErrno(e, "reserve space in " + tmp));
    }
  }
  {
    auto map = Mapping::Map(total, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0, "mmap " + tmp);
    if (!map.ok()) return fail(map.status());
    std::vector<GuestRegion> views;
    unsigned i = 0;
    for (auto r : chain.leaf().manifest().getMemory().getRegions()) {
      GuestRegion g;
      g.slot = r.getSlot();
      g.gpa = r.getGuestPhysAddr();
      g.size = r.getSize();
      g.host = map->data() + placed[i++].offset;
      g.name = r.getName();
      views.push_back(g);
    }
    EagerOptions eo;
    eo.destination_zeroed = true;  // a new file reads as zero
    Status s = LoadEager(chain, views, eo);
    if (!s.ok()) return fail(s);
  }
  if (::rename(tmp.c_str(), img.c_str()) != 0) return fail(Status::FromErrno(errno, "rename " + tmp));
  // The stamp names the image as it is now; written last, so a build that
  // stops half-way leaves an image without a matching stamp.
  const std::string stamp = Stamp(chain, fd.get());
  VMSNAP_RETURN_IF_ERROR(ReplaceSmallFile(StampPath(chain), stamp));
  // Read-only from here: the VMs map it private.
  UniqueFd ro(::open(img.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ro.valid()) return Status::FromErrno(errno, "open " + img);
  (void)::flock(ro.get(), LOCK_SH | LOCK_NB);  // as OpenFresh
  return ro;
}

std::vector<ImageCache::Entry> ImageCache::Entries() const {
  auto ns = [](const timespec& t) { return int64_t(t.tv_sec) * 1'000'000'000 + t.tv_nsec; };
  std::vector<Entry> images;
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return {};
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    // <32 hex digits>.img: a build's unfinished file has a suffix.
    if (name.size() != 36 || name.compare(32, 4, ".img") != 0) continue;
    struct stat st {};
    if (::stat((dir_ + "/" + name).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    Entry en{name.substr(0, 32), uint64_t(st.st_blocks) * 512, ns(st.st_mtim)};
    struct stat stamp {};
    if (::stat(EntryPath(en.id, ".stamp").c_str(), &stamp) == 0) en.last = ns(stamp.st_mtim);
    images.push_back(std::move(en));
  }
  ::closedir(d);
  return images;
}

std::vector<std::string> ImageCache::Trim(uint64_t max_bytes, const std::map<std::string, int64_t>& used_ns,
                                          const std::string& keep) const {
  return Evict(max_bytes, 0, used_ns, keep, nullptr);
}

ImageCache::Made ImageCache::MakeRoom(const SnapshotChain& chain,
                                      const std::map<std::string, int64_t>& used_ns) const {
  Made made;
  made.room = CheckRoom(chain);
  if (made.room.ok()) return made;
  const int64_t short_by = int64_t(ImageBytes(chain)) - Room();
  made.removed = Evict(UINT64_MAX, uint64_t(std::max<int64_t>(short_by, 0)), used_ns, "", &made.in_use);
  made.room = CheckRoom(chain);
  return made;
}

std::vector<std::string> ImageCache::Evict(uint64_t max_bytes, uint64_t free_bytes,
                                           const std::map<std::string, int64_t>& used_ns, const std::string& keep,
                                           std::vector<std::string>* in_use) const {
  std::vector<Entry> images = Entries();
  uint64_t total = 0;
  for (Entry& en : images) {
    if (auto u = used_ns.find(en.id); u != used_ns.end()) en.last = std::max(en.last, u->second);
    total += en.bytes;
  }
  std::sort(images.begin(), images.end(), [](const Entry& a, const Entry& b) { return a.last < b.last; });
  std::vector<std::string> removed;
  uint64_t freed = 0;
  for (const Entry& en : images) {
    if (total <= max_bytes && freed >= free_bytes) break;
    if (en.id == keep) continue;
    const std::string img = EntryPath(en.id, ".img");
    UniqueFd fd(::open(img.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) continue;
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {  // a VM maps it
      if (in_use) in_use->push_back(en.id);
      continue;
    }
    // The stamp first: from then on nothing trusts the image.
    ::unlink(EntryPath(en.id, ".stamp").c_str());
    if (::unlink(img.c_str()) != 0) continue;
    total -= std::min(total, en.bytes);
    freed += en.bytes;
    removed.push_back(en.id);
  }
  return removed;
}

Status MapImage(const SnapshotChain& chain, int image, std::span<const GuestRegion> regions) {
  uint64_t total = 0;
  const std::vector<Placed> placed = Layout(chain, &total);
  if (placed.size() != regions.size()) {
    return Status::InvalidArgument("guest memory has " + std::to_string(regions.size()) +
                                   " regions, the snapshot " + std::to_string(placed.size()));
  }
  for (const Placed& p : placed) {
    const GuestRegion* g = nullptr;
    for (const GuestRegion& r : regions) {
      if (r.gpa == p.gpa && r.size == p.size) g = &r;
    }
    if (g == nullptr) return Status::InvalidArgument("no guest memory region at gpa " + Hex(p.gpa));
    void* at = ::mmap(g->host, p.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, image, off_t(p.offset));
    if (at == MAP_FAILED) return Status::FromErrno(errno, "mmap the decompressed image at offset " + Hex(p.offset));
  }
  return Status::Ok();
}

}  // namespace vmsnap::memory
