// Byte layout of the .vmsnap container: header, chunk area, manifest, footer.
// See ../docs/format.md for the drawing and the meaning of every field; a change
// here is a change there, in the same commit.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "format/status.h"

namespace vmsnap::layout {

// Format version this library writes. A reader accepts any minor of kMajor
// and rejects a greater major.
inline constexpr uint16_t kMajor = 1;
inline constexpr uint16_t kMinor = 0;

inline constexpr char kHeaderMagic[8] = {'V', 'M', 'S', 'N', 'A', 'P', '\r', '\n'};
inline constexpr char kFooterMagic[8] = {'V', 'M', 'S', 'N', 'A', 'P', 'E', 'N'};
inline constexpr size_t kHeaderSize = 64;
inline constexpr size_t kFooterSize = 64;
// Chunks start on this boundary so that raw (uncompressed) chunks can be mapped.
inline constexpr uint64_t kChunkAlign = 4096;

// A snapshot's identity: XXH3-128 of its manifest bytes. The manifest holds
// every chunk's checksum, so the id pins the whole content.
using SnapshotId = std::array<uint8_t, 16>;
std::string IdToHex(const SnapshotId& id);

}  // namespace vmsnap::layout
