// SPDX-License-Identifier: MIT
// Block grid, page-source resolution over a chain and chunk decoding shared by
// the eager and lazy loaders.
#include "restore/memory/blocks.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "format/chunk_check.h"
#include "format/layout.h"

namespace vmsnap::memory::internal {

std::string ChunkName(const SnapshotReader& r, size_t index) {
  return r.path() + ": " + vmsnap::ChunkName(index, r.chunk_index()[index], r.page_size());
}

Status BlockGrid::Init(const SnapshotChain& chain, std::span<const GuestRegion> regions) {
  page_size_ = chain.leaf().page_size();
  const long host_page = ::sysconf(_SC_PAGESIZE);
  if (host_page <= 0 || page_size_ % uint32_t(host_page) != 0) {
    return Status::Unsupported("snapshot page size " + std::to_string(page_size_) +
                               " is not a multiple of the host page size " +
                               std::to_string(host_page));
  }
  // Blocks as large as the largest chunk, so that with the writer's grid each
  // block is exactly one chunk and each chunk is decoded once.
  uint32_t block_pages = 0;
  for (const auto& layer : chain.layers()) {
    for (const ChunkInfo& c : layer->chunk_index()) block_pages = std::max(block_pages, c.page_count);
  }
  if (block_pages == 0) block_pages = 256;
  block_bytes_ = uint64_t(block_pages) * page_size_;

  regions_.assign(regions.begin(), regions.end());
  std::sort(regions_.begin(), regions_.end(),
            [](const GuestRegion& a, const GuestRegion& b) { return a.gpa < b.gpa; });
  total_bytes_ = 0;
  for (size_t i = 0; i < regions_.size(); ++i) {
    const GuestRegion& r = regions_[i];
    const std::string name = "guest region " + std::to_string(i) + " (gpa " + Hex(r.gpa) + ", " +
                             std::to_string(r.size) + " bytes)";
    if (r.host == nullptr || reinterpret_cast<uintptr_t>(r.host) % page_size_ != 0 ||
        r.gpa % page_size_ != 0 || r.size % page_size_ != 0 || r.size == 0) {
      return Status::InvalidArgument(name + ": not aligned to the page size " +
                                     std::to_string(page_size_) + " or empty");
    }
    if (i > 0 && r.gpa < regions_[i - 1].gpa + regions_[i - 1].size) {
      return Status::InvalidArgument(name + ": overlaps the region before it");
    }
    first_block_.push_back(blocks_.size());
    for (uint64_t off = 0; off < r.size; off += block_bytes_) {
      const uint64_t len = std::min(block_bytes_, r.size - off);
      blocks_.push_back(Block{r.host + off, r.gpa + off, uint32_t(len / page_size_)});
    }
    total_bytes_ += r.size;
  }
  return Status::Ok();
}

long BlockGrid::Find(const uint8_t* p) const {
  for (size_t i = 0; i < regions_.size(); ++i) {
    const GuestRegion& r = regions_[i];
    if (p >= r.host && p < r.host + r.size) {
      return long(first_block_[i] + uint64_t(p - r.host) / block_bytes_);
    }
  }
  return -1;
}

namespace {

// The checks on a chunk's bytes are format/chunk_check.h's, the ones every
// reader of chunks makes; here, how the whole-chunk decoder (BlockReader) and
// the one that decodes from the front (ChunkStream) fetch the bytes and name
// a chunk that fails.

// The stored bytes of chunk `chunk` of layer `layer`, the fetch hook (may be
// empty) asked for them first; StoredBytes checks them against the stored
// checksum before handing anything out.
Result<std::span<const uint8_t>> FetchStored(const SnapshotChain& chain, const ChunkFetchFn& fetch,
                                             int32_t layer, uint32_t chunk) {
  const SnapshotReader& r = *chain.layers()[size_t(layer)];
  if (fetch && r.chunk_index()[chunk].stored_length > 0) VMSNAP_RETURN_IF_ERROR(fetch(size_t(layer), chunk));
  auto stored = r.StoredBytes(chunk);
  if (!stored.ok()) return stored.status().Context(r.path());
  return stored;
}

// A check of chunk `chunk` of `r` (format/chunk_check.h), its failure named
// as the loaders name chunks: with the file.
Status Named(Status s, const SnapshotReader& r, uint32_t chunk) {
  return s.ok() ? s : s.Context(ChunkName(r, chunk));
}

}  // namespace

BlockReader::BlockReader(const SnapshotChain& chain, ChunkFetchFn fetch)
    : chain_(chain), fetch_(std::move(fetch)), dctx_(ZSTD_createDCtx()) {
  cache_.resize(2);
}

Status BlockReader::Decompress(int32_t layer, uint32_t chunk, std::span<const uint8_t> stored,
                               uint8_t* out) {
  const SnapshotReader& r = *chain_.layers()[size_t(layer)];
  const ChunkInfo& c = r.chunk_index()[chunk];
  if (!dctx_) return Status::Internal("out of memory creating a zstd context");
  VMSNAP_RETURN_IF_ERROR(Named(CheckFrame(c, stored), r, chunk));
  const size_t n = ZSTD_decompressDCtx(dctx_.get(), out, c.raw_length, stored.data(), stored.size());
  if (ZSTD_isError(n)) {
    return Status::Corruption(ChunkName(r, chunk) + ": zstd: " + ZSTD_getErrorName(n));
  }
  return Named(CheckDecoded(c, out, n), r, chunk);
}

void ResolvePages(const SnapshotChain& chain, const BlockGrid::Block& block, std::vector<PageRef>& refs) {
  const uint32_t ps = chain.leaf().page_size();
  const uint32_t n = block.pages;
  const uint64_t a = block.gpa, b = block.gpa + uint64_t(n) * ps;
  constexpr int32_t kUnresolved = -2;
  refs.assign(n, PageRef{kUnresolved, 0, 0});
  uint32_t unresolved = n;
  const auto& layers = chain.layers();
  // Leaf first: the newest layer that defines a page decides its content.
  for (int32_t l = int32_t(layers.size()) - 1; l >= 0 && unresolved > 0; --l) {
    const auto& chunks = layers[size_t(l)]->chunk_index();
    auto it = std::upper_bound(chunks.begin(), chunks.end(), a,
                               [](uint64_t g, const ChunkInfo& c) { return g < c.gpa; });
    if (it != chunks.begin() && std::prev(it)->end(ps) > a) --it;
    for (; it != chunks.end() && it->gpa < b; ++it) {
      const ChunkInfo& c = *it;
      const uint32_t ci = uint32_t(it - chunks.begin());
      const uint64_t lo = std::max(a, c.gpa), hi = std::min(b, c.end(ps));
      const uint32_t i0 = uint32_t((lo - c.gpa) / ps), i1 = uint32_t((hi - c.gpa) / ps);
      uint32_t raw = 0;
      for (uint32_t k = 0; k < i0 / 8; ++k) raw += uint32_t(std::popcount(unsigned(c.present[k])));
      for (uint32_t k = i0 & ~7u; k < i0; ++k) raw += c.IsPresent(k) ? 1 : 0;
      for (uint32_t i = i0; i < i1; ++i) {
        const bool present = c.IsPresent(i);
        PageRef& ref = refs[size_t((c.gpa - a) / ps + i)];
        if (ref.layer == kUnresolved && c.IsDefined(i)) {
          ref = present ? PageRef{l, ci, raw} : PageRef{-1, 0, 0};
          --unresolved;
        }
        if (present) ++raw;
      }
    }
  }
  for (PageRef& ref : refs) {
    if (ref.layer == kUnresolved) ref.layer = -1;  // no layer defines it: zero
  }
}

Status BlockReader::Read(const BlockGrid::Block& block,
                         const std::function<Status(const Run&)>& emit, uint8_t* direct,
                         bool* wrote_direct) {
  ResolvePages(chain_, block, refs_);
  return Read(block, refs_, emit, direct, wrote_direct);
}

Status BlockReader::Read(const BlockGrid::Block& block, const std::vector<PageRef>& refs,
                         const std::function<Status(const Run&)>& emit, uint8_t* direct,
                         bool* wrote_direct) {
  if (wrote_direct) *wrote_direct = false;
  const uint32_t ps = chain_.leaf().page_size();
  const uint32_t n = block.pages;
  const uint64_t a = block.gpa;
  const auto& layers = chain_.layers();

  // One dense compressed chunk that is exactly this block: decompress in place.
  if (direct != nullptr && refs[0].layer >= 0) {
    const PageRef f = refs[0];
    const SnapshotReader& r = *layers[size_t(f.layer)];
    const ChunkInfo& c = r.chunk_index()[f.chunk];
    bool whole = c.compressed && c.gpa == a && c.page_count == n &&
                 c.raw_length == uint64_t(n) * ps;
    for (uint32_t p = 0; whole && p < n; ++p) {
      whole = refs[p].layer == f.layer && refs[p].chunk == f.chunk && refs[p].raw == p;
    }
    if (whole) {
      VMSNAP_ASSIGN_OR_RETURN(std::span<const uint8_t> stored, FetchStored(chain_, fetch_, f.layer, f.chunk));
      VMSNAP_RETURN_IF_ERROR(Decompress(f.layer, f.chunk, stored, direct));
      if (wrote_direct) *wrote_direct = true;
      return Status::Ok();
    }
  }

  // Decode every chunk the block needs before emitting anything.
  std::vector<std::pair<uint64_t, const uint8_t*>> need;  // (layer << 32 | chunk, data)
  auto key_of = [](const PageRef& r) { return (uint64_t(uint32_t(r.layer)) << 32) | r.chunk; };
  for (const PageRef& ref : refs) {
    if (ref.layer < 0) continue;
    const uint64_t k = key_of(ref);
    if (std::none_of(need.begin(), need.end(), [k](const auto& e) { return e.first == k; })) {
      need.emplace_back(k, nullptr);
    }
  }
  if (cache_.size() < need.size()) cache_.resize(need.size());
  std::vector<bool> used(cache_.size(), false);
  for (auto& [k, data] : need) {
    for (size_t s = 0; s < cache_.size(); ++s) {
      if (cache_[s].data && ((uint64_t(uint32_t(cache_[s].layer)) << 32) | cache_[s].chunk) == k) {
        data = cache_[s].data;
        used[s] = true;
        break;
      }
    }
  }
  for (auto& [k, data] : need) {
    if (data) continue;
    const int32_t l = int32_t(k >> 32);
    const uint32_t ci = uint32_t(k);
    const SnapshotReader& r = *layers[size_t(l)];
    const ChunkInfo& c = r.chunk_index()[ci];
    VMSNAP_ASSIGN_OR_RETURN(std::span<const uint8_t> stored, FetchStored(chain_, fetch_, l, ci));
    if (!c.compressed) {
      VMSNAP_RETURN_IF_ERROR(Named(CheckUncompressed(c, stored), r, ci));
      data = stored.data();  // pages in place in the mapped file
      continue;
    }
    size_t s = 0;
    for (size_t t = 0; t < cache_.size(); ++t) {
      const size_t cand = (next_slot_ + t) % cache_.size();
      if (!used[cand]) {
        s = cand;
        break;
      }
    }
    next_slot_ = unsigned((s + 1) % cache_.size());
    used[s] = true;
    Decoded& d = cache_[s];
    d.data = nullptr;
    if (d.buf.size() < c.raw_length) d.buf.resize(c.raw_length);
    VMSNAP_RETURN_IF_ERROR(Decompress(l, ci, stored, d.buf.data()));
    d.layer = l;
    d.chunk = ci;
    d.data = d.buf.data();
    data = d.data;
  }

  auto data_of = [&](const PageRef& ref) {
    const uint64_t k = key_of(ref);
    for (const auto& e : need) {
      if (e.first == k) return e.second;
    }
    return static_cast<const uint8_t*>(nullptr);
  };
  uint32_t p = 0;
  while (p < n) {
    const PageRef first = refs[p];
    uint32_t q = p + 1;
    if (first.layer < 0) {
      while (q < n && refs[q].layer < 0) ++q;
      VMSNAP_RETURN_IF_ERROR(emit(Run{p, q - p, nullptr}));
    } else {
      while (q < n && refs[q].layer == first.layer && refs[q].chunk == first.chunk &&
             refs[q].raw == first.raw + (q - p)) {
        ++q;
      }
      VMSNAP_RETURN_IF_ERROR(emit(Run{p, q - p, data_of(first) + uint64_t(first.raw) * ps}));
    }
    p = q;
  }
  return Status::Ok();
}

ChunkStream::ChunkStream(uint64_t max_raw_bytes) {
  // A decoder in memory of our own, touched now: the bufferless API needs
  // no window buffer of its own (earlier output is the window).
  const size_t size = ZSTD_estimateDCtxSize();
  void* ws = std::aligned_alloc(64, (size + 63) & ~size_t(63));
  if (ws != nullptr) {
    std::memset(ws, 0, size);
    workspace_.reset(ws);
    dctx_ = ZSTD_initStaticDCtx(ws, size);
  }
  buf_.resize(max_raw_bytes);  // zero-filled: every page of it touched
}

Status ChunkStream::Begin(const SnapshotChain& chain, const ChunkFetchFn& fetch, int32_t layer,
                          uint32_t chunk) {
  reader_ = chain.layers()[size_t(layer)].get();
  chunk_ = chunk;
  page_size_ = reader_->page_size();
  const ChunkInfo& c = reader_->chunk_index()[chunk];
  raw_length_ = c.raw_length;
  in_ = out_ = 0;
  data_ = nullptr;
  VMSNAP_ASSIGN_OR_RETURN(stored_, FetchStored(chain, fetch, layer, chunk));
  if (!c.compressed) {
    VMSNAP_RETURN_IF_ERROR(Named(CheckUncompressed(c, stored_), *reader_, chunk));
    data_ = stored_.data();
    out_ = raw_length_;
    return Status::Ok();
  }
  if (!dctx_) return Status::Internal("out of memory creating a zstd context");
  if (raw_length_ > buf_.size()) buf_.resize(raw_length_);
  VMSNAP_RETURN_IF_ERROR(Named(CheckFrame(c, stored_), *reader_, chunk));
  const size_t rc = ZSTD_decompressBegin(dctx_);
  if (ZSTD_isError(rc)) return Status::Internal(std::string("zstd: ") + ZSTD_getErrorName(rc));
  data_ = buf_.data();
  return Status::Ok();
}

Status ChunkStream::Ready(uint32_t pages) {
  const uint64_t want = std::min<uint64_t>(uint64_t(pages) * page_size_, raw_length_);
  while (out_ < want) {
    const size_t next = ZSTD_nextSrcSizeToDecompress(dctx_);
    if (next == 0 || next > stored_.size() - in_) {
      return Status::Corruption(ChunkName(*reader_, chunk_) + ": zstd frame ends after " + std::to_string(out_) +
                                " bytes, manifest says " + std::to_string(raw_length_));
    }
    const size_t n = ZSTD_decompressContinue(dctx_, buf_.data() + out_, raw_length_ - out_,
                                             stored_.data() + in_, next);
    if (ZSTD_isError(n)) return Status::Corruption(ChunkName(*reader_, chunk_) + ": zstd: " + ZSTD_getErrorName(n));
    in_ += next;
    out_ += n;
  }
  return Status::Ok();
}

Status ChunkStream::Finish() {
  VMSNAP_RETURN_IF_ERROR(Ready(stored_pages()));
  const ChunkInfo& c = reader_->chunk_index()[chunk_];
  if (!c.compressed) return Status::Ok();  // checked whole by Begin
  // The frame's end (a checksum, if it has one) follows the last block.
  for (size_t next; (next = ZSTD_nextSrcSizeToDecompress(dctx_)) != 0;) {
    if (next > stored_.size() - in_) break;
    const size_t n = ZSTD_decompressContinue(dctx_, buf_.data() + out_, 0, stored_.data() + in_, next);
    if (ZSTD_isError(n) || n != 0) {
      return Status::Corruption(ChunkName(*reader_, chunk_) + ": zstd: " +
                                (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "more data than the manifest says"));
    }
    in_ += next;
  }
  if (ZSTD_nextSrcSizeToDecompress(dctx_) != 0 || in_ != stored_.size()) {
    return Status::Corruption(ChunkName(*reader_, chunk_) + ": stored bytes are not exactly one zstd frame of " +
                              std::to_string(raw_length_) + " bytes");
  }
  return Named(CheckDecoded(reader_->chunk_index()[chunk_], data_, out_), *reader_, chunk_);
}

}  // namespace vmsnap::memory::internal
