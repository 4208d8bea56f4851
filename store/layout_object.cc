// SPDX-License-Identifier: MIT
// The layout object's encoding and the store's object names (see
// layout_object.h).
#include "store/layout_object.h"

#include <xxhash.h>
#include <zstd.h>

#include <cstring>

#include "base/hex.h"
#include "store/sha256.h"

namespace vmsnap::store {
namespace {

using layout::GetLe32;
using layout::GetLe64;
using layout::PutLe32;
using layout::PutLe64;

// The layout object (docs/store.md): "VMSNAPLY", version, chunk count, file
// size, the gap bytes' raw and stored sizes; in version 2 (an incremental
// snapshot) the parent's snapshot id, its name's length and the name; one
// entry per chunk in file order, the gap bytes (zstd), XXH3-64 of
// everything before it. A full snapshot is still written as version 1, so
// older readers read it.
constexpr char kLayoutMagic[8] = {'V', 'M', 'S', 'N', 'A', 'P', 'L', 'Y'};
constexpr uint32_t kLayoutVersion = 1;
constexpr uint32_t kLayoutVersionParent = 2;
constexpr size_t kLayoutHeader = 40;
constexpr size_t kParentHeader = 20;  // parent id, name length
constexpr size_t kMaxParentName = 4096;
constexpr size_t kEntryBytes = 48;  // offset, length, SHA-256

// The file's bytes [off, off + len), which no chunk may overlap (the
// header, the manifest, the footer): from the layout's gap bytes.
Result<std::span<const uint8_t>> GapBytes(const Layout& l, uint64_t off, uint64_t len, const std::string& where) {
  uint64_t gap_at = 0, file_at = 0;
  for (size_t i = 0; i <= l.chunks.size(); ++i) {
    const uint64_t end = i < l.chunks.size() ? l.chunks[i].offset : l.file_size;
    if (off >= file_at && len <= end - file_at && off - file_at <= end - file_at - len) {
      return std::span<const uint8_t>(l.gaps.data() + gap_at + (off - file_at), len);
    }
    gap_at += end - file_at;
    if (i < l.chunks.size()) file_at = end + l.chunks[i].length;
  }
  return Status::Corruption(where + ": not a snapshot layout (the manifest or footer lies in a chunk)");
}

// The snapshot id of the file a layout describes: XXH3-128 of its manifest,
// found through the footer (checked as a file's footer is), both in the gap
// bytes; the manifest is checked against the footer's checksum.
Result<layout::SnapshotId> LayoutId(const Layout& l, const std::string& where) {
  auto bad = [&](const std::string& why) { return Status::Corruption(where + ": not a snapshot layout (" + why + ")"); };
  if (l.file_size < layout::kFooterSize) return bad("no footer");
  VMSNAP_ASSIGN_OR_RETURN(std::span<const uint8_t> footer_bytes,
                          GapBytes(l, l.file_size - layout::kFooterSize, layout::kFooterSize, where));
  auto footer = layout::DecodeFooter(footer_bytes.first<layout::kFooterSize>(), l.file_size);
  if (!footer.ok()) return bad(footer.status().message());
  VMSNAP_ASSIGN_OR_RETURN(std::span<const uint8_t> manifest,
                          GapBytes(l, footer->manifest_offset, footer->manifest_length, where));
  if (layout::Checksum(manifest.data(), manifest.size()) != footer->manifest_checksum) {
    return bad("the manifest does not match the footer's checksum");
  }
  return layout::ComputeId(manifest);
}

}  // namespace

std::string ChunkObject(const uint8_t sha256[32]) {
  return kChunkPrefix + BytesHex(std::span<const uint8_t>(sha256, 32));
}

std::string LayoutObject(const std::string& name) { return kLayoutPrefix + name; }

std::vector<uint8_t> EncodeLayout(const Layout& l) {
  const size_t bound = ZSTD_compressBound(l.gaps.size());
  const size_t head = kLayoutHeader + (l.parent.empty() ? 0 : kParentHeader + l.parent.size());
  std::vector<uint8_t> out(head + l.chunks.size() * kEntryBytes + bound + 8);
  uint8_t* p = out.data();
  std::memcpy(p, kLayoutMagic, 8);
  PutLe32(p + 8, l.parent.empty() ? kLayoutVersion : kLayoutVersionParent);
  PutLe32(p + 12, static_cast<uint32_t>(l.chunks.size()));
  PutLe64(p + 16, l.file_size);
  PutLe64(p + 24, l.gaps.size());
  if (!l.parent.empty()) {
    std::memcpy(p + kLayoutHeader, l.parent_id.data(), l.parent_id.size());
    PutLe32(p + kLayoutHeader + 16, static_cast<uint32_t>(l.parent.size()));
    std::memcpy(p + kLayoutHeader + kParentHeader, l.parent.data(), l.parent.size());
  }
  size_t at = head;
  for (const LayoutChunk& e : l.chunks) {
    PutLe64(p + at, e.offset);
    PutLe64(p + at + 8, e.length);
    std::memcpy(p + at + 16, e.sha.data(), 32);
    at += kEntryBytes;
  }
  const size_t z = ZSTD_compress(p + at, bound, l.gaps.data(), l.gaps.size(), 3);
  PutLe64(p + 32, z);  // ZSTD_compress cannot fail with a bound-sized buffer
  at += z;
  PutLe64(p + at, XXH3_64bits(p, at));
  out.resize(at + 8);
  return out;
}

Result<Layout> DecodeLayout(std::span<const uint8_t> b, const std::string& where) {
  auto bad = [&](const std::string& why) { return Status::Corruption(where + ": not a snapshot layout (" + why + ")"); };
  if (b.size() < kLayoutHeader + 8) return bad("too short");
  if (std::memcmp(b.data(), kLayoutMagic, 8) != 0) return bad("bad magic");
  if (GetLe64(b.data() + b.size() - 8) != XXH3_64bits(b.data(), b.size() - 8)) return bad("checksum mismatch");
  const uint32_t version = GetLe32(b.data() + 8);
  if (version != kLayoutVersion && version != kLayoutVersionParent) {
    return Status::Unsupported(where + ": layout version " + std::to_string(version) +
                               " is newer than this vmsnap reads");
  }
  Layout l;
  size_t head = kLayoutHeader;
  if (version == kLayoutVersionParent) {
    if (b.size() < kLayoutHeader + kParentHeader + 8) return bad("too short");
    std::memcpy(l.parent_id.data(), b.data() + kLayoutHeader, l.parent_id.size());
    const uint32_t len = GetLe32(b.data() + kLayoutHeader + 16);
    if (len == 0 || len > kMaxParentName || len > b.size() - 8 - kLayoutHeader - kParentHeader) {
      return bad("parent name past its end");
    }
    l.parent.assign(reinterpret_cast<const char*>(b.data()) + kLayoutHeader + kParentHeader, len);
    head += kParentHeader + len;
  }
  const uint64_t n = GetLe32(b.data() + 12);
  l.file_size = GetLe64(b.data() + 16);
  const uint64_t gaps_raw = GetLe64(b.data() + 24), gaps_stored = GetLe64(b.data() + 32);
  if (n > (b.size() - head - 8) / kEntryBytes) return bad("chunk count past its end");
  const size_t entries_end = head + n * kEntryBytes;
  if (gaps_stored != b.size() - 8 - entries_end) return bad("gap bytes do not fill it");
  uint64_t covered = 0, prev_end = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const uint8_t* p = b.data() + head + i * kEntryBytes;
    LayoutChunk e;
    e.offset = GetLe64(p);
    e.length = GetLe64(p + 8);
    std::memcpy(e.sha.data(), p + 16, 32);
    if (e.offset < prev_end || e.length > l.file_size || e.offset > l.file_size - e.length) {
      return bad("chunk " + std::to_string(i) + " outside the file or out of order");
    }
    prev_end = e.offset + e.length;
    covered += e.length;
    l.chunks.push_back(e);
  }
  if (covered + gaps_raw != l.file_size) return bad("chunks and gaps do not add up to the file size");
  l.gaps.resize(gaps_raw);
  const size_t got = ZSTD_decompress(l.gaps.data(), l.gaps.size(), b.data() + entries_end, gaps_stored);
  if (ZSTD_isError(got) || got != gaps_raw) return bad("gap bytes do not decompress");
  return l;
}

Result<SnapshotLayout> DescribeLayout(std::span<const uint8_t> bytes, const std::string& where) {
  SnapshotLayout out;
  VMSNAP_ASSIGN_OR_RETURN(static_cast<Layout&>(out), DecodeLayout(bytes, where));
  VMSNAP_ASSIGN_OR_RETURN(out.id, LayoutId(out, where));
  out.sha = Sha256(bytes);
  return out;
}

}  // namespace vmsnap::store
