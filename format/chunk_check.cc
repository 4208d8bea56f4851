// SPDX-License-Identifier: MIT
// See chunk_check.h.
#include "format/chunk_check.h"

#include <zstd.h>

#include "base/hex.h"
#include "format/layout.h"

namespace vmsnap {

std::string ChunkName(size_t index, const ChunkInfo& c, uint32_t page_size) {
  std::string s = "chunk " + std::to_string(index) + " (gpa " + Hex(c.gpa) + "-" + Hex(c.end(page_size) - 1) + ")";
  if (c.stored_length > 0) s += " at file offset " + Hex(c.file_offset);
  return s;
}

Status CheckStoredSum(const ChunkInfo& c, std::span<const uint8_t> stored) {
  const uint64_t sum = layout::Checksum(stored.data(), stored.size());
  if (sum == c.checksum) return Status::Ok();
  return Status::Corruption("checksum mismatch (manifest says " + Hex(c.checksum) + ", computed " + Hex(sum) + ")");
}

Status CheckUncompressed(const ChunkInfo& c, std::span<const uint8_t> stored) {
  if (stored.size() == c.raw_length && (c.raw_length == 0 || c.raw_checksum == c.checksum)) return Status::Ok();
  return Status::Corruption("raw checksum or length disagrees with the stored ones of an uncompressed chunk");
}

Status CheckFrame(const ChunkInfo& c, std::span<const uint8_t> stored) {
  const unsigned long long fcs = ZSTD_getFrameContentSize(stored.data(), stored.size());
  if (fcs == ZSTD_CONTENTSIZE_ERROR || fcs == ZSTD_CONTENTSIZE_UNKNOWN) {
    return Status::Corruption("not a zstd frame with a content size");
  }
  if (fcs != c.raw_length) {
    return Status::Corruption("zstd frame holds " + std::to_string(fcs) + " bytes, manifest says " +
                              std::to_string(c.raw_length));
  }
  const size_t frame = ZSTD_findFrameCompressedSize(stored.data(), stored.size());
  if (ZSTD_isError(frame) || frame != stored.size()) {
    return Status::Corruption("stored bytes are not exactly one zstd frame");
  }
  return Status::Ok();
}

Status CheckDecoded(const ChunkInfo& c, const uint8_t* raw, size_t n) {
  if (n != c.raw_length) {
    return Status::Corruption("decompressed to " + std::to_string(n) + " bytes, manifest says " +
                              std::to_string(c.raw_length));
  }
  const uint64_t sum = layout::Checksum(raw, n);
  if (sum == c.raw_checksum) return Status::Ok();
  return Status::Corruption("raw checksum mismatch after decompression (manifest says " + Hex(c.raw_checksum) +
                            ", computed " + Hex(sum) + ")");
}

}  // namespace vmsnap
