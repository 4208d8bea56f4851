// SPDX-License-Identifier: MIT
// Encoding and decoding of the fixed-size header and footer (docs/format.md).
#include "format/layout.h"

#include <xxhash.h>

#include <cstdio>
#include <cstring>

namespace vmsnap::layout {

std::string IdToHex(const SnapshotId& id) { return BytesHex(id); }

SnapshotId ComputeId(std::span<const uint8_t> manifest_bytes) {
  XXH128_hash_t h = XXH3_128bits(manifest_bytes.data(), manifest_bytes.size());
  SnapshotId id{};
  for (int i = 0; i < 8; ++i) {
    id[i] = uint8_t(h.high64 >> (56 - 8 * i));
    id[8 + i] = uint8_t(h.low64 >> (56 - 8 * i));
  }
  return id;
}

uint64_t Checksum(const void* data, size_t len) { return XXH3_64bits(data, len); }

void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]) {
  std::memset(out, 0, kHeaderSize);
  std::memcpy(out + kHeaderMagicOffset, kHeaderMagic, 8);
  PutLe16(out + kHeaderMajorOffset, h.major);
  PutLe16(out + kHeaderMinorOffset, h.minor);
  PutLe32(out + kHeaderFlagsOffset, h.flags);
  PutLe32(out + kHeaderSizeOffset, h.header_size);
  PutLe32(out + kHeaderAlignOffset, h.chunk_align);
  PutLe64(out + kHeaderChecksumOffset, Checksum(out, kHeaderChecksumOffset));
}

Result<Header> DecodeHeader(std::span<const uint8_t> file) {
  if (file.size() < kHeaderSize) {
    return Status::Corruption("header: file is " + std::to_string(file.size()) +
                              (file.size() == 1 ? " byte" : " bytes") + ", shorter than the " + std::to_string(kHeaderSize) +
                              "-byte header (truncated or not a .vmsnap file)");
  }
  const uint8_t* p = file.data();
  if (std::memcmp(p + kHeaderMagicOffset, kHeaderMagic, 8) != 0) {
    return Status::Corruption("header at file offset 0x0: bad magic (not a .vmsnap file)");
  }
  uint64_t want = GetLe64(p + kHeaderChecksumOffset);
  uint64_t got = Checksum(p, kHeaderChecksumOffset);
  if (want != got) {
    return Status::Corruption("header at file offset 0x0: checksum mismatch (stored " + Hex(want) +
                              ", computed " + Hex(got) + ")");
  }
  Header h;
  h.major = GetLe16(p + kHeaderMajorOffset);
  h.minor = GetLe16(p + kHeaderMinorOffset);
  h.flags = GetLe32(p + kHeaderFlagsOffset);
  h.header_size = GetLe32(p + kHeaderSizeOffset);
  h.chunk_align = GetLe32(p + kHeaderAlignOffset);
  if (h.major != kMajor) {
    return Status::Unsupported("unsupported format version " + std::to_string(h.major) + "." +
                               std::to_string(h.minor) + " (this vmsnap reads " +
                               std::to_string(kMajor) + ".x)");
  }
  // Every 1.x file has this header size and chunk alignment; a minor version
  // may only add meaning to reserved bytes and flags.
  if (h.header_size != kHeaderSize || h.chunk_align != kChunkAlign) {
    return Status::Corruption("header at file offset 0x0: header size " +
                              std::to_string(h.header_size) + " / chunk alignment " +
                              std::to_string(h.chunk_align) + " differ from the 1.x layout (" +
                              std::to_string(kHeaderSize) + " / " + std::to_string(kChunkAlign) +
                              ")");
  }
  return h;
}

void EncodeFooter(const Footer& f, uint8_t out[kFooterSize]) {
  std::memset(out, 0, kFooterSize);
  PutLe64(out + kFooterManifestOffset, f.manifest_offset);
  PutLe64(out + kFooterManifestLength, f.manifest_length);
  PutLe64(out + kFooterManifestChecksum, f.manifest_checksum);
  PutLe32(out + kFooterFlagsOffset, f.flags);
  PutLe64(out + kFooterChecksumOffset, Checksum(out, kFooterChecksumOffset));
  std::memcpy(out + kFooterMagicOffset, kFooterMagic, 8);
}

Result<Footer> DecodeFooter(std::span<const uint8_t> file) {
  if (file.size() < kHeaderSize + kFooterSize) {
    return Status::Corruption("footer: file is " + std::to_string(file.size()) +
                              (file.size() == 1 ? " byte" : " bytes") + ", too short to hold a header and a footer (truncated)");
  }
  return DecodeFooter(file.last<kFooterSize>(), file.size());
}

Result<Footer> DecodeFooter(std::span<const uint8_t, kFooterSize> footer, uint64_t file_size) {
  if (file_size < kHeaderSize + kFooterSize) {
    return Status::Corruption("footer: file is " + std::to_string(file_size) +
                              (file_size == 1 ? " byte" : " bytes") + ", too short to hold a header and a footer (truncated)");
  }
  const uint64_t at = file_size - kFooterSize;
  const uint8_t* p = footer.data();
  const std::string where = "footer at file offset " + Hex(at) + ": ";
  if (std::memcmp(p + kFooterMagicOffset, kFooterMagic, 8) != 0) {
    return Status::Corruption(where + "bad magic (file truncated or not a complete .vmsnap file)");
  }
  uint64_t want = GetLe64(p + kFooterChecksumOffset);
  uint64_t got = Checksum(p, kFooterChecksumOffset);
  if (want != got) {
    return Status::Corruption(where + "checksum mismatch (stored " + Hex(want) + ", computed " +
                              Hex(got) + ")");
  }
  Footer f;
  f.manifest_offset = GetLe64(p + kFooterManifestOffset);
  f.manifest_length = GetLe64(p + kFooterManifestLength);
  f.manifest_checksum = GetLe64(p + kFooterManifestChecksum);
  f.flags = GetLe32(p + kFooterFlagsOffset);
  if (f.manifest_offset < kHeaderSize || f.manifest_offset > at ||
      f.manifest_length > at - f.manifest_offset || f.manifest_length == 0 ||
      f.manifest_offset % kManifestAlign != 0 || f.manifest_length % 8 != 0) {
    return Status::Corruption(where + "manifest offset " + Hex(f.manifest_offset) + " length " +
                              std::to_string(f.manifest_length) +
                              " out of bounds or misaligned (manifest must lie in [" +
                              Hex(kHeaderSize) + ", " + Hex(at) + "), 8-byte aligned)");
  }
  if (f.manifest_length > kMaxManifestBytes) {
    return Status::Corruption(where + "manifest length " + std::to_string(f.manifest_length) +
                              " exceeds the limit of " + std::to_string(kMaxManifestBytes) +
                              " bytes");
  }
  return f;
}

}  // namespace vmsnap::layout
