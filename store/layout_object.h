// SPDX-License-Identifier: MIT
// The store's object names, and the layout object: a snapshot in the store,
// minus its chunks (docs/store.md). Where each chunk sits in the file, named
// by the SHA-256 of its stored bytes, and the file's other bytes (header,
// manifest, footer, padding), compressed.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/layout.h"

namespace vmsnap::store {

// Object names.
std::string ChunkObject(const uint8_t sha256[32]);
std::string LayoutObject(const std::string& name);
inline constexpr char kChunkPrefix[] = "vmsnap.chunk.";
inline constexpr char kLayoutPrefix[] = "vmsnap.snap.";

struct LayoutChunk {
  uint64_t offset = 0;  // in the file
  uint64_t length = 0;
  std::array<uint8_t, 32> sha{};
};

// What a layout object holds.
struct Layout {
  uint64_t file_size = 0;
  std::vector<LayoutChunk> chunks;  // by file offset, not overlapping
  std::vector<uint8_t> gaps;        // every byte of the file outside the chunks, in order
  std::string parent;               // an incremental snapshot's parent, by name in this store; empty: a full one
  layout::SnapshotId parent_id{};   // and by the id the child's manifest records
};
std::vector<uint8_t> EncodeLayout(const Layout& l);
// `where` names the object in errors.
Result<Layout> DecodeLayout(std::span<const uint8_t> bytes, const std::string& where);

// A stored snapshot's layout, as readers that fetch chunks themselves use it
// (pull, the lazy cache: store/lazy_cache.h).
struct SnapshotLayout : Layout {
  std::array<uint8_t, 32> sha{};  // of the layout object: names the snapshot's content
  layout::SnapshotId id{};        // the snapshot's id (of the manifest, which the gaps hold)
};
// Decodes a layout object and finds the snapshot id in it, checking the
// manifest it holds against the footer's checksum.
Result<SnapshotLayout> DescribeLayout(std::span<const uint8_t> bytes, const std::string& where);

}  // namespace vmsnap::store
