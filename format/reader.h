// SPDX-License-Identifier: MIT
// Reader of .vmsnap files. Open() maps the file and checks the header, footer,
// versions, the manifest checksum and every offset and length in the chunk
// index against the file size before anything is used; each chunk's checksum
// is checked before that chunk is used. Errors name the section or chunk and
// the file offset.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "format/layout.h"
#include "base/progress.h"
#include "base/status.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap {

struct ReaderOptions {
  // Cap'n Proto limits for the manifest: the traversal limit is sized from the
  // manifest length and capped here.
  uint64_t max_traversal_words = 1ull << 31;
  int nesting_limit = 64;
};

// One entry of the chunk index, decoded and validated at Open(). The bitmap
// pointers point into the manifest, which the reader owns.
struct ChunkInfo {
  uint64_t gpa = 0;            // first guest-physical address the chunk covers
  uint32_t page_count = 0;
  uint64_t file_offset = 0;
  uint64_t stored_length = 0;
  uint64_t raw_length = 0;     // stored pages * page size
  bool compressed = false;
  uint64_t checksum = 0;       // XXH3-64 of the stored bytes
  uint64_t raw_checksum = 0;   // XXH3-64 of the raw stored pages
  const uint8_t* present = nullptr;  // ceil(page_count/8) bytes
  const uint8_t* defined = nullptr;  // nullptr: every page of the range defined
  uint64_t end(uint32_t page_size) const { return gpa + uint64_t(page_count) * page_size; }
  bool IsDefined(uint32_t i) const { return !defined || ((defined[i >> 3] >> (i & 7)) & 1); }
  bool IsPresent(uint32_t i) const { return (present[i >> 3] >> (i & 7)) & 1; }
  // Calls fn(first, count, stored) for each run of present pages in order:
  // pages first..first+count-1 are the stored pages from index `stored` on.
  // Stops, returning false, as soon as fn returns false.
  template <typename Fn>
  bool ForEachPresentRun(Fn&& fn) const {
    uint32_t stored = 0;
    for (uint32_t i = 0; i < page_count;) {
      if (!IsPresent(i)) {
        ++i;
        continue;
      }
      uint32_t j = i;
      while (j < page_count && IsPresent(j)) ++j;
      if (!fn(i, j - i, stored)) return false;
      stored += j - i;
      i = j;
    }
    return true;
  }
};

class SnapshotReader {
 public:
  static Result<std::unique_ptr<SnapshotReader>> Open(const std::string& path,
                                                      const ReaderOptions& options = {});
  // Reads a snapshot held in memory (tests, the fuzzer). `bytes` must outlive the reader.
  static Result<std::unique_ptr<SnapshotReader>> OpenBuffer(std::span<const uint8_t> bytes,
                                                            std::string name,
                                                            const ReaderOptions& options = {});
  virtual ~SnapshotReader() = default;

  virtual const std::string& path() const = 0;
  virtual uint16_t format_major() const = 0;
  virtual uint16_t format_minor() const = 0;
  virtual schema::Manifest::Reader manifest() const = 0;
  virtual layout::SnapshotId id() const = 0;
  virtual uint64_t file_size() const = 0;
  virtual uint32_t page_size() const = 0;
  // The validated chunk index, in manifest order (ascending guest-physical address).
  virtual const std::vector<ChunkInfo>& chunk_index() const = 0;
  // Where the chunk area, manifest and footer sit in the file.
  virtual uint64_t manifest_offset() const = 0;
  virtual uint64_t manifest_length() const = 0;

  // Checks chunk `index`'s checksum, decompresses it and writes its defined
  // pages into `out`, which covers the chunk's whole range (pageCount *
  // pageSize bytes): stored pages copied, zero pages zeroed, undefined pages
  // left untouched. Errors name the chunk, its guest-physical range and its
  // file offset.
  virtual Status ReadChunk(size_t index, uint8_t* out) const = 0;

  // The chunk's bytes as stored in the file, after checking their checksum.
  // For an uncompressed chunk these are the stored pages back to back,
  // page-aligned in the file (so they can be mapped).
  virtual Result<std::span<const uint8_t>> StoredBytes(size_t index) const = 0;

  // Checks that every byte between the checksummed parts is zero padding the
  // layout explains, then every checksum, decompressing every chunk.
  // Reports the first problem (kCorruption, naming the chunk or file offset).
  virtual Status VerifyAll(const ProgressFn& progress = {}) const = 0;
};

}  // namespace vmsnap
