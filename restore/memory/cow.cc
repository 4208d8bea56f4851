// SPDX-License-Identifier: MIT
// Copy-on-write mapping of an uncompressed snapshot's stored pages straight
// from the file: the page cache serves the guest's first reads, writes get
// private copies, and the file is never modified.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "base/fd.h"
#include "format/layout.h"
#include "restore/memory/blocks.h"
#include "restore/memory/loader.h"

namespace vmsnap::memory {

Status MapCopyOnWrite(const SnapshotChain& chain, std::span<const GuestRegion> regions,
                      uint64_t max_mappings, const std::function<void()>& before_mapping) {
  if (chain.layers().size() != 1) {
    return Status::Unsupported("copy-on-write mapping needs a full snapshot, not an incremental one");
  }
  const SnapshotReader& r = chain.leaf();
  internal::BlockGrid grid;  // validates the regions
  VMSNAP_RETURN_IF_ERROR(grid.Init(chain, regions));
  const uint32_t ps = r.page_size();
  struct Map {
    uint8_t* host;
    uint64_t file_offset;
    uint64_t len;
  };
  std::vector<Map> maps;
  for (size_t ci = 0; ci < r.chunk_index().size(); ++ci) {
    const ChunkInfo& c = r.chunk_index()[ci];
    if (c.raw_length == 0) continue;
    if (c.compressed) {
      return Status::Unsupported("copy-on-write mapping needs an uncompressed snapshot (" +
                                 internal::ChunkName(r, ci) + " is compressed)");
    }
    const GuestRegion* reg = nullptr;
    for (const GuestRegion& g : grid.regions()) {
      if (c.gpa >= g.gpa && c.end(ps) <= g.gpa + g.size) reg = &g;
    }
    if (reg == nullptr) {
      return Status::InvalidArgument(internal::ChunkName(r, ci) + " lies outside guest memory");
    }
    const bool fits = c.ForEachPresentRun([&](uint32_t first, uint32_t count, uint32_t stored) {
      maps.push_back(Map{reg->host + (c.gpa - reg->gpa) + uint64_t(first) * ps,
                         c.file_offset + uint64_t(stored) * ps, uint64_t(count) * ps});
      return maps.size() <= max_mappings;
    });
    if (!fits) {
      return Status::Unsupported("copy-on-write mapping would need more than " + std::to_string(max_mappings) +
                                 " mappings");
    }
  }
  const UniqueFd fd(::open(r.path().c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno(errno, "open " + r.path());
  if (before_mapping) before_mapping();
  Status s;
  for (const Map& m : maps) {
    void* p = ::mmap(m.host, m.len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd.get(),
                     off_t(m.file_offset));
    if (p == MAP_FAILED) {
      s = Status::FromErrno(errno, "mmap " + r.path() + " at file offset " +
                                       Hex(m.file_offset));
      break;
    }
  }
  return s;
}

}  // namespace vmsnap::memory
