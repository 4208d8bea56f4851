// SPDX-License-Identifier: MIT
// The checks a chunk's bytes must pass against its manifest entry before any
// page of it is used. Every reader of chunks calls these (the whole-chunk
// read, and the loaders' block and streaming decoders), so a damaged chunk is
// refused for the same reasons, in the same words, wherever it is read.
//
// Each check returns kCorruption with the reason alone; the caller puts the
// chunk's name in front (ChunkName, with Status::Context), so the name is
// only built when a check fails.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "base/status.h"
#include "format/reader.h"

namespace vmsnap {

// "chunk 9 (gpa 0x380000-0x3bffff) at file offset 0x5000" (no offset for a
// chunk that stores nothing).
std::string ChunkName(size_t index, const ChunkInfo& c, uint32_t page_size);

// The stored bytes against the stored checksum.
Status CheckStoredSum(const ChunkInfo& c, std::span<const uint8_t> stored);

// An uncompressed chunk's stored bytes are its pages: its raw length and
// checksum must be the stored ones, or the manifest contradicts itself.
Status CheckUncompressed(const ChunkInfo& c, std::span<const uint8_t> stored);

// A compressed chunk is exactly one zstd frame that says it holds the raw
// length, so a decoder can write into a buffer of exactly that size.
Status CheckFrame(const ChunkInfo& c, std::span<const uint8_t> stored);

// What the decoder wrote (`n` bytes at `raw`): the raw length, and the raw
// checksum the writer took of the pages.
Status CheckDecoded(const ChunkInfo& c, const uint8_t* raw, size_t n);

}  // namespace vmsnap
