// SPDX-License-Identifier: MIT
// SnapshotChain: opens a snapshot and its parents and answers "where does this
// page come from" by binary search in each layer's sorted chunk index.
#include "format/chain.h"

#include <algorithm>
#include <cstring>

#include "format/layout.h"

namespace vmsnap {
namespace {

// Index of the chunk of `chunks` containing `gpa`, or -1.
long FindChunk(const std::vector<ChunkInfo>& chunks, uint32_t ps, uint64_t gpa) {
  auto it = std::upper_bound(chunks.begin(), chunks.end(), gpa,
                             [](uint64_t g, const ChunkInfo& c) { return g < c.gpa; });
  if (it == chunks.begin()) return -1;
  --it;
  if (gpa >= it->end(ps)) return -1;
  return long(it - chunks.begin());
}

}  // namespace

std::string ParentPathOf(const std::string& child_path, const std::string& recorded) {
  if (!recorded.empty() && recorded[0] == '/') return recorded;
  const size_t slash = child_path.rfind('/');
  // A child named without a folder: its parent is named without one too.
  if (slash == std::string::npos) return recorded;
  return child_path.substr(0, slash + 1) + recorded;
}

Result<std::unique_ptr<SnapshotReader>> OpenParent(const SnapshotReader& child, const ReaderOptions& options) {
  auto ref = child.manifest().getParent();
  const std::string recorded = ref.getPath().cStr();
  if (recorded.empty()) {
    return Status::Corruption("snapshot " + child.path() + " names a parent without a path");
  }
  const std::string ppath = ParentPathOf(child.path(), recorded);
  layout::SnapshotId want{};
  auto idb = ref.getSnapshotId();  // 16 bytes: the reader checked
  std::memcpy(want.data(), idb.begin(), want.size());
  auto parent = SnapshotReader::Open(ppath, options);
  if (!parent.ok()) {
    if (parent.status().code() == Code::kNotFound) {
      return Status::NotFound("parent snapshot " + ppath + " of " + child.path() + " is missing");
    }
    return parent.status().Context("parent snapshot " + ppath + " of " + child.path());
  }
  if (parent.value()->id() != want) {
    return Status::Corruption("parent snapshot " + ppath + " of " + child.path() +
                              " is not the recorded file (id " + layout::IdToHex(parent.value()->id()) +
                              ", expected " + layout::IdToHex(want) + ")");
  }
  if (parent.value()->page_size() != child.page_size()) {
    return Status::Corruption("parent snapshot " + ppath + " of " + child.path() + " has page size " +
                              std::to_string(parent.value()->page_size()) + ", the child " +
                              std::to_string(child.page_size()));
  }
  return std::move(parent).value();
}

Result<SnapshotChain> SnapshotChain::Open(const std::string& leaf_path,
                                          const ReaderOptions& options) {
  SnapshotChain chain;
  std::vector<std::unique_ptr<SnapshotReader>> rev;
  auto leaf = SnapshotReader::Open(leaf_path, options);
  if (!leaf.ok()) return leaf.status().Context(leaf_path);
  rev.push_back(std::move(leaf).value());
  for (;;) {
    const SnapshotReader& child = *rev.back();
    auto m = child.manifest();
    if (!m.hasParent()) break;
    if (rev.size() > layout::kMaxParentDepth) {
      return Status::Corruption("snapshot " + leaf_path + " has more than " +
                                std::to_string(layout::kMaxParentDepth) + " parents");
    }
    VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotReader> parent, OpenParent(child, options));
    rev.push_back(std::move(parent));
  }
  std::reverse(rev.begin(), rev.end());
  chain.layers_ = std::move(rev);
  return chain;
}

SnapshotChain::PageSource SnapshotChain::Locate(uint64_t gpa) const {
  for (int l = int(layers_.size()) - 1; l >= 0; --l) {
    const SnapshotReader& r = *layers_[size_t(l)];
    const uint32_t ps = r.page_size();
    long i = FindChunk(r.chunk_index(), ps, gpa);
    if (i < 0) continue;
    const ChunkInfo& c = r.chunk_index()[size_t(i)];
    const uint32_t page = uint32_t((gpa - c.gpa) / ps);
    if (!c.IsDefined(page)) continue;
    PageSource s;
    s.layer = l;
    s.chunk = uint32_t(i);
    s.page = page;
    s.stored = c.IsPresent(page);
    return s;
  }
  return PageSource{};
}

Status SnapshotChain::ReadMemory(uint64_t gpa, uint64_t len, uint8_t* out) const {
  if (len == 0) return Status::Ok();
  if (gpa + len < gpa) {
    return Status::InvalidArgument("memory range " + Hex(gpa) + "+" + std::to_string(len) +
                                   " overflows");
  }
  const uint64_t end = gpa + len;
  std::memset(out, 0, len);
  std::vector<uint8_t> scratch;
  // Oldest first: each layer's defined pages overwrite what its parents said.
  for (const auto& layer : layers_) {
    const SnapshotReader& r = *layer;
    const uint32_t ps = r.page_size();
    const auto& chunks = r.chunk_index();
    long first = FindChunk(chunks, ps, gpa);
    size_t i = first >= 0 ? size_t(first)
                          : size_t(std::upper_bound(chunks.begin(), chunks.end(), gpa,
                                                    [](uint64_t g, const ChunkInfo& c) {
                                                      return g < c.gpa;
                                                    }) -
                                   chunks.begin());
    for (; i < chunks.size() && chunks[i].gpa < end; ++i) {
      const ChunkInfo& c = chunks[i];
      const uint64_t cend = c.end(ps);
      if (c.gpa >= gpa && cend <= end) {
        Status s = r.ReadChunk(i, out + (c.gpa - gpa));
        if (!s.ok()) return s.Context(r.path());
        continue;
      }
      const uint64_t span = cend - c.gpa;
      if (scratch.size() < span) scratch.resize(span);
      Status s = r.ReadChunk(i, scratch.data());
      if (!s.ok()) return s.Context(r.path());
      const uint64_t lo = std::max(c.gpa, gpa), hi = std::min(cend, end);
      for (uint64_t p = lo; p < hi;) {
        const uint32_t k = uint32_t((p - c.gpa) / ps);
        const uint64_t pend = std::min(c.gpa + uint64_t(k + 1) * ps, hi);
        if (c.IsDefined(k)) std::memcpy(out + (p - gpa), scratch.data() + (p - c.gpa), pend - p);
        p = pend;
      }
    }
  }
  // Only the leaf's memory map says what exists now.
  auto regions = leaf().manifest().getMemory().getRegions();
  uint64_t cursor = gpa;
  for (auto reg : regions) {
    const uint64_t a = reg.getGuestPhysAddr(), b = a + reg.getSize();
    if (b <= cursor) continue;
    if (a >= end) break;
    if (a > cursor) std::memset(out + (cursor - gpa), 0, a - cursor);
    cursor = std::max(cursor, b);
    if (cursor >= end) break;
  }
  if (cursor < end) std::memset(out + (cursor - gpa), 0, end - cursor);
  return Status::Ok();
}

}  // namespace vmsnap
