// SPDX-License-Identifier: MIT
// Internal to the memory loaders: the block grid over guest regions, where each
// page of a block comes from in a chain, and a per-thread chunk decoder.
#pragma once

// The bufferless streaming API (ZSTD_decompressBegin/Continue) decodes a
// frame a zstd block at a time straight into the caller's buffer.
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "format/chain.h"
#include "base/status.h"
#include "restore/memory/loader.h"

namespace vmsnap::memory::internal {

// Guest regions cut into blocks of `block_bytes` aligned to each region start.
class BlockGrid {
 public:
  Status Init(const SnapshotChain& chain, std::span<const GuestRegion> regions);
  size_t count() const { return blocks_.size(); }
  uint32_t page_size() const { return page_size_; }
  struct Block {
    uint8_t* host;
    uint64_t gpa;
    uint32_t pages;
  };
  const Block& block(size_t i) const { return blocks_[i]; }
  // The block holding host address `p`, or -1.
  long Find(const uint8_t* p) const;
  uint64_t total_bytes() const { return total_bytes_; }
  const std::vector<GuestRegion>& regions() const { return regions_; }

 private:
  std::vector<GuestRegion> regions_;
  std::vector<size_t> first_block_;  // per region
  std::vector<Block> blocks_;
  uint64_t block_bytes_ = 0;
  uint32_t page_size_ = 4096;
  uint64_t total_bytes_ = 0;
};

// A run of pages of one block with one source: either zero pages (src null)
// or pages stored back to back in one decoded chunk.
struct Run {
  uint32_t first_page;  // index within the block
  uint32_t pages;
  const uint8_t* src;   // nullptr: zero pages
};

// Where one page of a block comes from.
struct PageRef {
  int32_t layer;   // -1: zero
  uint32_t chunk;
  uint32_t raw;    // index among the chunk's stored pages
};

// Where each page of `block` comes from, the newest layer that defines it
// deciding; nothing is read.
void ResolvePages(const SnapshotChain& chain, const BlockGrid::Block& block, std::vector<PageRef>& refs);

// Decodes chunks of one chain on one thread, keeping the last two decoded.
class BlockReader {
 public:
  // `fetch` (may be empty) is called before each chunk's bytes are read.
  explicit BlockReader(const SnapshotChain& chain, ChunkFetchFn fetch = {});
  BlockReader(const BlockReader&) = delete;
  BlockReader& operator=(const BlockReader&) = delete;

  // Resolves where each page of `block` comes from (leaf layer first), decodes
  // and checks every chunk it needs, then hands the block's runs to `emit` in
  // ascending order. Nothing is emitted if a chunk fails: errors come before
  // any run, so a failed block never has some of its pages filled.
  //
  // With `direct` set, a block that is exactly one dense compressed chunk is
  // decompressed straight into `direct` (the block's memory) instead, and
  // `emit` is not called; *wrote_direct tells which happened.
  Status Read(const BlockGrid::Block& block, const std::function<Status(const Run&)>& emit,
              uint8_t* direct = nullptr, bool* wrote_direct = nullptr);
  // The same for a caller that has already resolved the block's pages
  // (`refs`, from ResolvePages on this block).
  Status Read(const BlockGrid::Block& block, const std::vector<PageRef>& refs,
              const std::function<Status(const Run&)>& emit, uint8_t* direct = nullptr,
              bool* wrote_direct = nullptr);

 private:
  struct Decoded {
    int32_t layer = -1;
    uint32_t chunk = 0;
    const uint8_t* data = nullptr;  // raw stored pages back to back
    std::vector<uint8_t> buf;
  };
  Status Decompress(int32_t layer, uint32_t chunk, std::span<const uint8_t> stored, uint8_t* out);

  const SnapshotChain& chain_;
  ChunkFetchFn fetch_;
  struct DctxFree {
    void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
  };
  std::unique_ptr<ZSTD_DCtx, DctxFree> dctx_;
  std::vector<PageRef> refs_;
  std::vector<Decoded> cache_;
  unsigned next_slot_ = 0;
};

// One chunk's stored pages made ready from the front, a zstd block (at most
// 128 KiB) at a time, straight into a buffer of its own: the lazy pager's
// answer to a first touch, which needs one page and not the whole chunk.
// Begin checks the stored bytes against their checksum before anything is
// decoded, so every page made ready is decoded from the bytes the writer
// stored; the checksum of the decoded pages can only be checked once all of
// them are (Finish). The decoder's memory and the buffer are allocated and
// touched when the object is made, so that a warm VM pays for them before
// its request.
class ChunkStream {
 public:
  // `max_raw_bytes`: the largest chunk (raw) it will be given.
  explicit ChunkStream(uint64_t max_raw_bytes);
  ChunkStream(const ChunkStream&) = delete;
  ChunkStream& operator=(const ChunkStream&) = delete;

  // Starts chunk `chunk` of layer `layer` (0 = the chain's base): `fetch`
  // (may be empty) is asked for it, its stored bytes are checked, nothing
  // is decoded yet. An uncompressed chunk is ready at once, in place in the
  // mapped file.
  Status Begin(const SnapshotChain& chain, const ChunkFetchFn& fetch, int32_t layer, uint32_t chunk);
  // Decodes until at least the first `pages` stored pages are ready (or
  // every one is).
  Status Ready(uint32_t pages);
  uint32_t ready_pages() const { return uint32_t(out_ / page_size_); }
  uint32_t stored_pages() const { return uint32_t(raw_length_ / page_size_); }
  // The stored pages, back to back (the first ready_pages() of them valid).
  const uint8_t* data() const { return data_; }
  // Decodes the rest, then checks the frame ended where the manifest says
  // and the decoded pages against their checksum.
  Status Finish();

 private:
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> workspace_;
  ZSTD_DCtx* dctx_ = nullptr;  // inside workspace_
  std::vector<uint8_t> buf_;
  const SnapshotReader* reader_ = nullptr;
  uint32_t chunk_ = 0;
  uint32_t page_size_ = 4096;
  std::span<const uint8_t> stored_;
  const uint8_t* data_ = nullptr;
  uint64_t raw_length_ = 0;
  uint64_t in_ = 0, out_ = 0;  // bytes consumed, bytes decoded
};

// "PATH: chunk N (gpa A-B) at file offset X" as the reader names chunks.
std::string ChunkName(const SnapshotReader& r, size_t index);

}  // namespace vmsnap::memory::internal
