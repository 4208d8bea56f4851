// SPDX-License-Identifier: MIT
// Byte layout of the .vmsnap container: header, chunk area, manifest, footer.
// See ../docs/format.md for the drawing and the meaning of every field; a change
// here is a change there, in the same commit.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "base/hex.h"
#include "base/status.h"

namespace vmsnap::layout {

// Format version this library writes. A reader accepts any minor of kMajor
// and rejects a greater major (docs/format.md, "Versioning"). kMinor is the
// newest minor this library knows; a file is labelled with the lowest minor
// whose features it uses (WriterOptions::format_minor), so that a reader of
// an older minor still reads every file that needs nothing newer.
inline constexpr uint16_t kMajor = 1;
inline constexpr uint16_t kMinor = 1;
// 1.1: aarch64 snapshots (Arch.aarch64, the aarch64 vCPU and VM state).
inline constexpr uint16_t kMinorAarch64 = 1;

inline constexpr char kHeaderMagic[8] = {'V', 'M', 'S', 'N', 'A', 'P', '\r', '\n'};
inline constexpr char kFooterMagic[8] = {'V', 'M', 'S', 'N', 'A', 'P', 'E', 'N'};
inline constexpr size_t kHeaderSize = 64;
inline constexpr size_t kFooterSize = 64;
// Chunks start on this boundary so that raw (uncompressed) chunks can be mapped.
inline constexpr uint64_t kChunkAlign = 4096;
// The manifest starts on a Cap'n Proto word boundary so it can be read in place.
inline constexpr uint64_t kManifestAlign = 8;

// Header field offsets (docs/format.md, "Header"). All integers little-endian.
inline constexpr size_t kHeaderMagicOffset = 0;      // 8 bytes
inline constexpr size_t kHeaderMajorOffset = 8;      // u16
inline constexpr size_t kHeaderMinorOffset = 10;     // u16
inline constexpr size_t kHeaderFlagsOffset = 12;     // u32, 0 in 1.0
inline constexpr size_t kHeaderSizeOffset = 16;      // u32, = kHeaderSize
inline constexpr size_t kHeaderAlignOffset = 20;     // u32, = kChunkAlign
inline constexpr size_t kHeaderChecksumOffset = 56;  // u64, XXH3-64 of bytes [0, 56)

// Footer field offsets, relative to the footer start (file size - kFooterSize).
inline constexpr size_t kFooterManifestOffset = 0;    // u64
inline constexpr size_t kFooterManifestLength = 8;    // u64
inline constexpr size_t kFooterManifestChecksum = 16; // u64, XXH3-64 of the manifest bytes
inline constexpr size_t kFooterFlagsOffset = 24;      // u32, 0 in 1.0
inline constexpr size_t kFooterChecksumOffset = 48;   // u64, XXH3-64 of footer bytes [0, 48)
inline constexpr size_t kFooterMagicOffset = 56;      // 8 bytes

// Limits the reader enforces (docs/format.md, "Limits").
inline constexpr uint64_t kMaxManifestBytes = 256ull << 20;
inline constexpr uint32_t kMaxChunkPages = 16384;
inline constexpr uint64_t kMaxChunkBytes = 64ull << 20;   // pageCount * pageSize
inline constexpr uint32_t kMinPageSize = 4096;
inline constexpr uint32_t kMaxPageSize = 1u << 20;
inline constexpr uint32_t kMaxParentDepth = 1024;
// The manifest traversal limit is this many times its size in words (so tools
// can walk it several times), capped by ReaderOptions::max_traversal_words.
inline constexpr uint64_t kTraversalFactor = 64;

// A snapshot's identity: XXH3-128 of its manifest bytes. The manifest holds
// every chunk's checksum, so the id pins the whole content.
using SnapshotId = std::array<uint8_t, 16>;
std::string IdToHex(const SnapshotId& id);
// The id of a manifest: XXH3-128 (seed 0), high 64 bits first, each big-endian,
// so IdToHex prints the canonical XXH128 hex form.
SnapshotId ComputeId(std::span<const uint8_t> manifest_bytes);

// Explicit little-endian codecs: never memcpy of host integers, so the same
// bytes come out on big-endian hosts.
inline void PutLe16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v); p[1] = uint8_t(v >> 8); }
inline void PutLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline void PutLe64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = uint8_t(v >> (8 * i));
}
inline uint16_t GetLe16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
inline uint32_t GetLe32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint64_t GetLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// XXH3-64, seed 0: the checksum of every section.
uint64_t Checksum(const void* data, size_t len);

struct Header {
  uint16_t major = kMajor;
  uint16_t minor = 0;
  uint32_t flags = 0;
  uint32_t header_size = kHeaderSize;
  uint32_t chunk_align = kChunkAlign;
};
void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]);
// Checks magic, then the checksum, then the version: a header that does not
// verify is reported as corrupt even if its version field looks newer.
// Errors: Corruption("header: ..."), Unsupported("unsupported format version
// 2.0 (this vmsnap reads 1.x)").
Result<Header> DecodeHeader(std::span<const uint8_t> file);

struct Footer {
  uint64_t manifest_offset = 0;
  uint64_t manifest_length = 0;
  uint64_t manifest_checksum = 0;
  uint32_t flags = 0;
};
void EncodeFooter(const Footer& f, uint8_t out[kFooterSize]);
// `file` is the whole file; the footer is its last kFooterSize bytes. Checks
// the footer's magic and checksum and that the manifest lies between the
// header and the footer. Errors: Corruption("footer at file offset 0x...: ...").
Result<Footer> DecodeFooter(std::span<const uint8_t> file);
// The same checks on a footer held apart from its file: `footer` is the last
// kFooterSize bytes of a file of `file_size` bytes (a stored snapshot's
// layout keeps them among its other bytes).
Result<Footer> DecodeFooter(std::span<const uint8_t, kFooterSize> footer, uint64_t file_size);

}  // namespace vmsnap::layout
