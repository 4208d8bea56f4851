// SPDX-License-Identifier: MIT
// SnapshotReader: maps a .vmsnap file and validates every part of it before use.
//
// Order of checks (docs/format.md, "Reading"): header magic, header checksum,
// version; footer magic, footer checksum, manifest bounds; manifest checksum;
// the Cap'n Proto message under explicit limits; then every chunk index entry.
// Only then is anything handed to the caller. Chunk checksums are checked each
// time a chunk is used.
#include "format/reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <capnp/dynamic.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <kj/exception.h>
#include <vector>

#include "base/fd.h"
#include "base/mapping.h"
#include "format/chunk_check.h"

namespace vmsnap {
namespace {

struct DctxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// Decompression state reused by every read on a thread: no per-chunk allocation.
struct ThreadScratch {
  std::unique_ptr<ZSTD_DCtx, DctxDeleter> dctx{ZSTD_createDCtx()};
  std::vector<uint8_t> raw;
};
ThreadScratch& Scratch() {
  thread_local ThreadScratch s;
  return s;
}

// Reads every field of the message with its schema type. totalSize() checks
// that pointers stay in bounds but not that each points at what the schema
// says (a struct where Data is expected); a tool reading such a field would
// get an exception. Reading everything once here moves that failure into
// Open(), as a Corruption status.
void TouchAll(const capnp::DynamicValue::Reader& v) {
  switch (v.getType()) {
    case capnp::DynamicValue::STRUCT: {
      auto s = v.as<capnp::DynamicStruct>();
      for (auto f : s.getSchema().getNonUnionFields()) TouchAll(s.get(f));
      KJ_IF_MAYBE(f, s.which()) { TouchAll(s.get(*f)); }
      break;
    }
    case capnp::DynamicValue::LIST: {
      auto l = v.as<capnp::DynamicList>();
      for (unsigned i = 0; i < l.size(); ++i) TouchAll(l[i]);
      break;
    }
    case capnp::DynamicValue::TEXT: (void)v.as<capnp::Text>(); break;
    case capnp::DynamicValue::DATA: (void)v.as<capnp::Data>(); break;
    default: break;
  }
}

// Reads every field of the manifest like TouchAll, except the chunk index:
// Validate() reads each field of every chunk entry with its typed getter
// (inside the same try block), and walking thousands of entries by reflection
// was most of the cost of opening a large snapshot (~5 ms for 4 GiB).
void TouchAllButChunks(const schema::Manifest::Reader& m) {
  auto s = capnp::toDynamic(m);
  for (auto f : s.getSchema().getNonUnionFields()) {
    if (f.getProto().getName() == "chunks") continue;
    TouchAll(s.get(f));
  }
  KJ_IF_MAYBE(f, s.which()) { TouchAll(s.get(*f)); }
}

// Cap'n Proto's messages name its API ("See capnp::ReaderOptions"); the user
// needs to know what is wrong with the file.
std::string DescribeCapnpError(const kj::Exception& e) {
  std::string d = e.getDescription().cStr();
  if (d.find("traversal limit") != std::string::npos) {
    return "malformed manifest: it refers to more data than it holds (its pointers overlap or repeat)";
  }
  if (d.find("nesting limit") != std::string::npos) {
    return "malformed manifest: structures nested deeper than any manifest nests them";
  }
  return "malformed manifest (Cap'n Proto: " + d + ")";
}

size_t Popcount(const uint8_t* p, size_t n) {
  size_t k = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    k += size_t(std::popcount(w));
  }
  for (; i < n; ++i) k += size_t(std::popcount(unsigned(p[i])));
  return k;
}

class ReaderImpl final : public SnapshotReader {
 public:
  Status Init(std::span<const uint8_t> bytes, std::string name, const ReaderOptions& opts) {
    bytes_ = bytes;
    name_ = std::move(name);
    if (bytes.empty()) return Status::Corruption("header: file is empty");
    VMSNAP_ASSIGN_OR_RETURN(header_, layout::DecodeHeader(bytes));
    VMSNAP_ASSIGN_OR_RETURN(footer_, layout::DecodeFooter(bytes));
    const uint8_t* mp = bytes.data() + footer_.manifest_offset;
    const size_t mlen = size_t(footer_.manifest_length);
    const std::string where = "manifest at file offset " + Hex(footer_.manifest_offset);
    uint64_t sum = layout::Checksum(mp, mlen);
    if (sum != footer_.manifest_checksum) {
      return Status::Corruption(where + " (" + std::to_string(mlen) +
                                " bytes): checksum mismatch (footer says " +
                                Hex(footer_.manifest_checksum) + ", computed " + Hex(sum) + ")");
    }
    id_ = layout::ComputeId({mp, mlen});
    const size_t nwords = mlen / sizeof(capnp::word);
    kj::ArrayPtr<const capnp::word> words;
    if (reinterpret_cast<uintptr_t>(mp) % alignof(capnp::word) == 0) {
      words = kj::arrayPtr(reinterpret_cast<const capnp::word*>(mp), nwords);
    } else {
      // Cap'n Proto reads words in place; a misaligned buffer gets an aligned copy.
      aligned_copy_ = kj::heapArray<capnp::word>(nwords);
      std::memcpy(aligned_copy_.begin(), mp, mlen);
      words = aligned_copy_.asPtr();
    }
    capnp::ReaderOptions ro;
    uint64_t limit = std::max<uint64_t>(uint64_t(nwords) * layout::kTraversalFactor, 1u << 16);
    ro.traversalLimitInWords = std::min<uint64_t>(limit, opts.max_traversal_words);
    ro.nestingLimit = opts.nesting_limit;
    try {
      message_ = std::make_unique<capnp::FlatArrayMessageReader>(words, ro);
      if (message_->getEnd() != words.end()) {
        return Status::Corruption(where + ": " +
                                  std::to_string((words.end() - message_->getEnd()) * 8) +
                                  " bytes after the Cap'n Proto message");
      }
      manifest_ = message_->getRoot<schema::Manifest>();
      // Walks every pointer, then every field by type, so a malformed
      // message fails here and not later in a tool that trusts Open().
      (void)manifest_.totalSize();
      TouchAllButChunks(manifest_);
      VMSNAP_RETURN_IF_ERROR(Validate(where));
      // Every field has now been read once within the limit, so the message
      // cannot amplify. Tools read parts of it again and again (each 1 MiB
      // window of a diff or an export looks up the region list), which
      // would exhaust any fixed budget on a large snapshot and throw from
      // deep inside a tool: from here on reads are not counted.
      capnp::ReaderOptions unlimited = ro;
      unlimited.traversalLimitInWords = kj::maxValue;
      message_ = std::make_unique<capnp::FlatArrayMessageReader>(words, unlimited);
      manifest_ = message_->getRoot<schema::Manifest>();
      return Status::Ok();
    } catch (const kj::Exception& e) {
      return Status::Corruption(where + ": " + DescribeCapnpError(e));
    }
  }

  const std::string& path() const override { return name_; }
  uint16_t format_major() const override { return header_.major; }
  uint16_t format_minor() const override { return header_.minor; }
  schema::Manifest::Reader manifest() const override { return manifest_; }
  layout::SnapshotId id() const override { return id_; }
  uint64_t file_size() const override { return bytes_.size(); }
  uint32_t page_size() const override { return page_size_; }
  const std::vector<ChunkInfo>& chunk_index() const override { return chunks_; }
  uint64_t manifest_offset() const override { return footer_.manifest_offset; }
  uint64_t manifest_length() const override { return footer_.manifest_length; }

  Result<std::span<const uint8_t>> StoredBytes(size_t index) const override {
    if (index >= chunks_.size()) {
      return Status::InvalidArgument("chunk " + std::to_string(index) + " does not exist (" +
                                     std::to_string(chunks_.size()) + " chunks)");
    }
    const ChunkInfo& c = chunks_[index];
    // A chunk that stores nothing owns no bytes; its offset is not checked
    // against the file and must not be used.
    if (c.stored_length == 0) return std::span<const uint8_t>();
    std::span<const uint8_t> stored = bytes_.subspan(c.file_offset, c.stored_length);
    if (Status st = CheckStoredSum(c, stored); !st.ok()) return st.Context(ChunkName(index, c, page_size_));
    return stored;
  }

  Status ReadChunk(size_t index, uint8_t* out) const override {
    VMSNAP_ASSIGN_OR_RETURN(std::span<const uint8_t> stored, StoredBytes(index));
    const ChunkInfo& c = chunks_[index];
    const size_t ps = page_size_;
    const uint8_t* raw = stored.data();
    const bool dense = c.raw_length == uint64_t(c.page_count) * ps;  // every page stored
    // The reason a check failed, with the chunk named (only then).
    auto named = [&](Status st) { return st.ok() ? st : st.Context(ChunkName(index, c, page_size_)); };
    if (c.compressed) {
      VMSNAP_RETURN_IF_ERROR(named(CheckFrame(c, stored)));
      ThreadScratch& s = Scratch();
      if (!s.dctx) return Status::Internal("out of memory creating a zstd context");
      uint8_t* dst;
      if (dense) {
        dst = out;  // straight into the caller's buffer: no copy
      } else {
        if (s.raw.size() < c.raw_length) s.raw.resize(c.raw_length);
        dst = s.raw.data();
      }
      const size_t n = ZSTD_decompressDCtx(s.dctx.get(), dst, c.raw_length, stored.data(), stored.size());
      if (ZSTD_isError(n)) return named(Status::Corruption(std::string("zstd: ") + ZSTD_getErrorName(n)));
      VMSNAP_RETURN_IF_ERROR(named(CheckDecoded(c, dst, n)));
      if (dense) return Status::Ok();
      raw = dst;
    } else {
      VMSNAP_RETURN_IF_ERROR(named(CheckUncompressed(c, stored)));
    }
    size_t k = 0;
    for (uint32_t i = 0; i < c.page_count; ++i) {
      if (!c.IsDefined(i)) continue;
      uint8_t* dst = out + size_t(i) * ps;
      if (c.IsPresent(i)) {
        std::memcpy(dst, raw + k * ps, ps);
        ++k;
      } else {
        std::memset(dst, 0, ps);
      }
    }
    return Status::Ok();
  }

  // Every byte of the file is accounted for: the header, each chunk's stored
  // bytes, the manifest and the footer are covered by checksums; what lies
  // between them may only be the zero padding the writer puts there (up to
  // the next kChunkAlign boundary before a chunk, kManifestAlign before the
  // manifest). So no byte can change without some check failing.
  Status VerifyLayout() const {
    std::vector<size_t> order;
    for (size_t i = 0; i < chunks_.size(); ++i) {
      if (chunks_[i].stored_length > 0) order.push_back(i);
    }
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return chunks_[a].file_offset < chunks_[b].file_offset; });
    uint64_t pos = layout::kHeaderSize;
    auto gap = [&](uint64_t end, uint64_t align, const std::string& before) -> Status {
      const uint64_t expected = (pos + align - 1) / align * align;
      if (end < pos) {
        return Status::Corruption(before + " overlaps the bytes before it (which end at file offset " + Hex(pos) +
                                  ")");
      }
      if (end != expected) {
        return Status::Corruption("file offsets [" + Hex(pos) + ", " + Hex(end) + ") before " + before +
                                  " are not accounted for (padding would end at " + Hex(expected) + ")");
      }
      for (uint64_t o = pos; o < end; ++o) {
        if (bytes_[o] != 0) {
          return Status::Corruption("padding byte at file offset " + Hex(o) + " before " + before + " is " +
                                    Hex(bytes_[o]) + ", not zero");
        }
      }
      return Status::Ok();
    };
    for (size_t i : order) {
      const ChunkInfo& c = chunks_[i];
      VMSNAP_RETURN_IF_ERROR(gap(c.file_offset, layout::kChunkAlign, ChunkName(i, c, page_size_)));
      pos = c.file_offset + c.stored_length;
    }
    const std::string manifest = "the manifest at file offset " + Hex(footer_.manifest_offset);
    VMSNAP_RETURN_IF_ERROR(gap(footer_.manifest_offset, layout::kManifestAlign, manifest));
    const uint64_t footer_at = bytes_.size() - layout::kFooterSize;
    if (footer_.manifest_offset + footer_.manifest_length != footer_at) {
      return Status::Corruption("file offsets [" + Hex(footer_.manifest_offset + footer_.manifest_length) + ", " +
                                Hex(footer_at) + ") between " + manifest + " and the footer are not accounted for");
    }
    return Status::Ok();
  }

  Status VerifyAll(const ProgressFn& progress) const override {
    VMSNAP_RETURN_IF_ERROR(VerifyLayout());
    uint64_t total = 0;
    for (const ChunkInfo& c : chunks_) total += uint64_t(c.page_count) * page_size_;
    std::vector<uint8_t> buf;
    uint64_t done = 0;
    for (size_t i = 0; i < chunks_.size(); ++i) {
      const uint64_t span = uint64_t(chunks_[i].page_count) * page_size_;
      if (buf.size() < span) buf.resize(span);
      VMSNAP_RETURN_IF_ERROR(ReadChunk(i, buf.data()));
      done += span;
      if (progress) progress(done, total);
    }
    return Status::Ok();
  }

  Mapping mapping_;

 private:
  Status Validate(const std::string& where) {
    auto m = manifest_;
    if (m.getFormatMajor() != header_.major || m.getFormatMinor() != header_.minor) {
      return Status::Corruption(where + ": format version " + std::to_string(m.getFormatMajor()) +
                                "." + std::to_string(m.getFormatMinor()) +
                                " disagrees with the header's " + std::to_string(header_.major) +
                                "." + std::to_string(header_.minor));
    }
    const uint32_t ps = m.getMemory().getPageSize();
    if (ps < layout::kMinPageSize || ps > layout::kMaxPageSize || (ps & (ps - 1)) != 0) {
      return Status::Corruption(where + ": memory page size " + std::to_string(ps) +
                                " is not a power of two in [4096, 1 MiB]");
    }
    page_size_ = ps;
    if (m.hasParent() && m.getParent().getSnapshotId().size() != 16) {
      return Status::Corruption(where + ": parent snapshot id is " +
                                std::to_string(m.getParent().getSnapshotId().size()) +
                                " bytes, expected 16");
    }
    auto regions = m.getMemory().getRegions();
    uint64_t prev_end = 0;
    for (unsigned i = 0; i < regions.size(); ++i) {
      auto r = regions[i];
      const uint64_t a = r.getGuestPhysAddr(), n = r.getSize();
      const std::string rn = where + ": memory region " + std::to_string(i) + " (gpa " + Hex(a) +
                             ", " + std::to_string(n) + " bytes)";
      if (a % ps != 0 || n % ps != 0) return Status::Corruption(rn + ": not page-aligned");
      if (a + n < a) return Status::Corruption(rn + ": end overflows 64 bits");
      if (i > 0 && a < prev_end) {
        return Status::Corruption(rn + ": overlaps or precedes the region before it");
      }
      prev_end = a + n;
    }
    auto list = m.getChunks();
    chunks_.reserve(list.size());
    size_t ri = 0;
    prev_end = 0;
    for (unsigned i = 0; i < list.size(); ++i) {
      auto e = list[i];
      ChunkInfo c;
      c.gpa = e.getGuestPhysAddr();
      c.page_count = e.getPageCount();
      c.file_offset = e.getFileOffset();
      c.stored_length = e.getStoredLength();
      c.raw_length = e.getRawLength();
      c.checksum = e.getChecksum();
      c.raw_checksum = e.getRawChecksum();
      // Names are built only for an error: formatting one per chunk on
      // success cost more than the checks.
      auto cn = [&] { return where + ": chunk " + std::to_string(i) + " (gpa " + Hex(c.gpa) + ")"; };
      if (c.page_count == 0 || c.page_count > layout::kMaxChunkPages ||
          uint64_t(c.page_count) * ps > layout::kMaxChunkBytes) {
        return Status::Corruption(cn() + ": page count " + std::to_string(c.page_count) +
                                  " outside [1, " + std::to_string(layout::kMaxChunkPages) +
                                  "] or larger than " + std::to_string(layout::kMaxChunkBytes) +
                                  " bytes");
      }
      const uint64_t span = uint64_t(c.page_count) * ps;
      if (c.gpa % ps != 0) return Status::Corruption(cn() + ": not page-aligned");
      if (c.gpa + span < c.gpa) return Status::Corruption(cn() + ": end overflows 64 bits");
      auto cname = [&] { return where + ": " + ChunkName(i, c, ps); };
      if (i > 0 && c.gpa < prev_end) {
        return Status::Corruption(cname() + ": overlaps or precedes the chunk before it (chunks must be "
                                  "sorted and disjoint)");
      }
      prev_end = c.gpa + span;
      while (ri < regions.size() &&
             regions[ri].getGuestPhysAddr() + regions[ri].getSize() <= c.gpa) {
        ++ri;
      }
      if (ri == regions.size() || regions[ri].getGuestPhysAddr() > c.gpa ||
          regions[ri].getGuestPhysAddr() + regions[ri].getSize() < c.gpa + span) {
        return Status::Corruption(cname() + ": not inside one memory region");
      }
      const size_t bm = (c.page_count + 7) / 8;
      auto present = e.getPresentBitmap();
      auto defined = e.getDefinedBitmap();
      if (present.size() != bm) {
        return Status::Corruption(cname() + ": present bitmap is " + std::to_string(present.size()) +
                                  " bytes, expected " + std::to_string(bm));
      }
      if (defined.size() != 0 && defined.size() != bm) {
        return Status::Corruption(cname() + ": defined bitmap is " + std::to_string(defined.size()) +
                                  " bytes, expected 0 or " + std::to_string(bm));
      }
      c.present = present.begin();
      c.defined = defined.size() ? defined.begin() : nullptr;
      const uint8_t tail_mask = c.page_count % 8 ? uint8_t(0xff << (c.page_count % 8)) : 0;
      if ((c.present[bm - 1] & tail_mask) || (c.defined && (c.defined[bm - 1] & tail_mask))) {
        return Status::Corruption(cname() + ": bitmap has bits set past page " +
                                  std::to_string(c.page_count - 1));
      }
      if (c.defined) {
        for (size_t b = 0; b < bm; ++b) {
          if (c.present[b] & ~c.defined[b]) {
            return Status::Corruption(cname() + ": a page is present but not defined");
          }
        }
      }
      const uint64_t stored_pages = Popcount(c.present, bm);
      if (stored_pages * ps != c.raw_length) {
        return Status::Corruption(cname() + ": raw length " + std::to_string(c.raw_length) + " is not " +
                                  std::to_string(stored_pages) + " present pages of " +
                                  std::to_string(ps) + " bytes");
      }
      switch (e.getCompression()) {
        case schema::Compression::NONE: c.compressed = false; break;
        case schema::Compression::ZSTD: c.compressed = true; break;
        default:
          return Status::Corruption(cname() + ": unknown compression " +
                                    std::to_string(unsigned(e.getCompression())));
      }
      if (c.raw_length == 0) {
        if (c.stored_length != 0) {
          return Status::Corruption(cname() + ": stores " + std::to_string(c.stored_length) +
                                    " bytes but has no present page");
        }
      } else {
        if (c.stored_length == 0 || (!c.compressed && c.stored_length != c.raw_length)) {
          return Status::Corruption(cname() + ": stored length " + std::to_string(c.stored_length) +
                                    " does not fit raw length " + std::to_string(c.raw_length));
        }
        if (c.file_offset % layout::kChunkAlign != 0 || c.file_offset < layout::kHeaderSize ||
            c.file_offset > footer_.manifest_offset ||
            c.stored_length > footer_.manifest_offset - c.file_offset) {
          return Status::Corruption(cname() + ": stored bytes [" + Hex(c.file_offset) + ", +" +
                                    std::to_string(c.stored_length) +
                                    ") are misaligned or outside the chunk area [" +
                                    Hex(layout::kHeaderSize) + ", " +
                                    Hex(footer_.manifest_offset) + ")");
        }
      }
      chunks_.push_back(c);
    }
    return Status::Ok();
  }

  std::span<const uint8_t> bytes_;
  std::string name_;
  layout::Header header_;
  layout::Footer footer_;
  layout::SnapshotId id_{};
  uint32_t page_size_ = 0;
  kj::Array<capnp::word> aligned_copy_;
  std::unique_ptr<capnp::FlatArrayMessageReader> message_;
  schema::Manifest::Reader manifest_;
  std::vector<ChunkInfo> chunks_;
};

}  // namespace

Result<std::unique_ptr<SnapshotReader>> SnapshotReader::OpenBuffer(std::span<const uint8_t> bytes,
                                                                   std::string name,
                                                                   const ReaderOptions& options) {
  auto r = std::make_unique<ReaderImpl>();
  VMSNAP_RETURN_IF_ERROR(r->Init(bytes, std::move(name), options));
  return std::unique_ptr<SnapshotReader>(std::move(r));
}

Result<std::unique_ptr<SnapshotReader>> SnapshotReader::Open(const std::string& path,
                                                             const ReaderOptions& options) {
  if (path == "-") {
    return Status::InvalidArgument(
        "'-': a snapshot cannot be read from standard input (it is read out of order); name its file");
  }
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused
  // below, as every file that is not a regular one.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) return Status::FromErrno(errno, "open " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  if (!S_ISREG(st.st_mode)) {
    const char* kind = S_ISFIFO(st.st_mode)  ? "a FIFO"
                       : S_ISDIR(st.st_mode) ? "a directory"
                       : S_ISCHR(st.st_mode) ? "a character device"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "a special file";
    return Status::InvalidArgument(path + " is not a regular file (" + kind + "): snapshots are read out of order");
  }
  auto r = std::make_unique<ReaderImpl>();
  const size_t len = size_t(st.st_size);
  if (len > 0) {
    VMSNAP_ASSIGN_OR_RETURN(r->mapping_, Mapping::Map(len, PROT_READ, MAP_PRIVATE, fd.get(), 0, "mmap " + path));
  }
  std::span<const uint8_t> bytes(r->mapping_.data(), len);
  VMSNAP_RETURN_IF_ERROR(r->Init(bytes, path, options));
  return std::unique_ptr<SnapshotReader>(std::move(r));
}

}  // namespace vmsnap
