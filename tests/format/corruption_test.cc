// SPDX-License-Identifier: MIT
// Damaged files: truncation at every section boundary and at random points,
// bit flips in every section, and structurally wrong manifests with valid
// checksums. Each must give a non-ok Status naming what is bad, never a crash.
#include <gtest/gtest.h>

#include "format/chain.h"
#include "format/reader.h"
#include "format/writer.h"
#include "tests/format/test_util.h"

namespace vmsnap {
namespace {

using testing::Bytes;

// Opens and verifies every chunk; the first problem.
Status OpenAndVerify(const Bytes& b) {
  auto r = SnapshotReader::OpenBuffer(b, "test");
  if (!r.ok()) return r.status();
  return (*r)->VerifyAll();
}

bool Contains(const std::string& s, const std::string& what) {
  return s.find(what) != std::string::npos;
}

class Corruption : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    testing::TempDir d;
    Bytes mem(40 * 4096, 0);
    testing::Rng rng(17);
    for (size_t p = 0; p < 40; ++p) {
      uint8_t* pg = mem.data() + p * 4096;
      if (p < 10) std::memset(pg, int(p + 1), 4096);  // chunk 0: compressible
      else if (p < 20) rng.Fill(pg, 4096);            // chunk 1: random, stored raw
      else if (p < 30 && p % 2) std::snprintf(reinterpret_cast<char*>(pg), 4096, "page %zu", p);
      // chunk 3: all zero
    }
    WriterOptions o;
    o.chunk_pages = 10;
    auto w = SnapshotWriter::Create(d / "c.vmsnap", o);
    ASSERT_TRUE(w.ok());
    auto r = (*w)->manifest().getMemory().initRegions(1);
    r[0].setGuestPhysAddr(0x300000);
    r[0].setSize(mem.size());
    (*w)->manifest().initVcpus(2);
    ASSERT_TRUE((*w)->AddMemory(0x300000, mem.data(), mem.size()).ok());
    ASSERT_TRUE((*w)->Commit().ok());
    file_ = new Bytes(testing::ReadFileBytes(d / "c.vmsnap"));
    auto rd = SnapshotReader::OpenBuffer(*file_, "c");
    ASSERT_TRUE(rd.ok());
    chunks_ = new std::vector<ChunkInfo>((*rd)->chunk_index());
    for (auto& c : *chunks_) c.present = c.defined = nullptr;  // the reader is gone
  }
  static void TearDownTestSuite() {
    delete file_;
    delete chunks_;
  }
  static Bytes* file_;
  static std::vector<ChunkInfo>* chunks_;
};
Bytes* Corruption::file_ = nullptr;
std::vector<ChunkInfo>* Corruption::chunks_ = nullptr;

TEST_F(Corruption, TheFixtureHasEveryKindOfChunk) {
  ASSERT_EQ(chunks_->size(), 4u);
  EXPECT_TRUE((*chunks_)[0].compressed);
  EXPECT_FALSE((*chunks_)[1].compressed);
  EXPECT_GT((*chunks_)[1].stored_length, 0u);
  EXPECT_EQ((*chunks_)[3].stored_length, 0u);
  EXPECT_TRUE(OpenAndVerify(*file_).ok());
}

TEST_F(Corruption, TruncationAtEverySectionBoundary) {
  const Bytes& f = *file_;
  auto s = testing::FindSections(f);
  std::vector<std::pair<size_t, std::string>> cuts = {
      {0, "header"}, {1, "header"}, {63, "header"}, {64, "footer"}, {100, "footer"},
      {s.manifest_offset, "footer"}, {s.manifest_offset + s.manifest_length / 2, "footer"},
      {s.footer_offset, "footer"}, {s.footer_offset + 32, "footer"}, {f.size() - 1, "footer"}};
  for (const auto& c : *chunks_) {
    if (c.stored_length) {
      cuts.push_back({c.file_offset, "footer"});
      cuts.push_back({c.file_offset + c.stored_length / 2, "footer"});
    }
  }
  testing::Rng rng(3);
  for (int i = 0; i < 60; ++i) cuts.push_back({size_t(rng.Next() % f.size()), ""});
  for (const auto& [n, what] : cuts) {
    Bytes t(f.begin(), f.begin() + long(n));
    Status st = OpenAndVerify(t);
    ASSERT_FALSE(st.ok()) << "cut at " << n;
    EXPECT_EQ(st.code(), Code::kCorruption) << st.message();
    if (!what.empty()) {
      EXPECT_TRUE(Contains(st.message(), what)) << n << ": " << st.message();
    }
    EXPECT_TRUE(Contains(st.message(), "header") || Contains(st.message(), "footer") ||
                Contains(st.message(), "truncated"))
        << st.message();
  }
}

TEST_F(Corruption, BitFlipInHeaderIsNamed) {
  for (size_t i = 0; i < layout::kHeaderSize; ++i) {
    Bytes b = *file_;
    b[i] ^= 0x10;
    Status st = OpenAndVerify(b);
    ASSERT_FALSE(st.ok()) << i;
    EXPECT_TRUE(Contains(st.message(), "header")) << i << ": " << st.message();
  }
  Bytes b = *file_;
  b[0] = 'X';
  EXPECT_EQ(OpenAndVerify(b).message(), "header at file offset 0x0: bad magic (not a .vmsnap file)");
  b = *file_;
  b[layout::kHeaderMinorOffset] ^= 1;  // version field without fixing the checksum
  EXPECT_TRUE(Contains(OpenAndVerify(b).message(), "header at file offset 0x0: checksum mismatch"));
}

TEST_F(Corruption, BitFlipInEachChunkNamesTheChunkItsRangeAndOffset) {
  for (size_t i = 0; i < chunks_->size(); ++i) {
    const ChunkInfo& c = (*chunks_)[i];
    if (c.stored_length == 0) continue;
    for (uint64_t at : {c.file_offset, c.file_offset + c.stored_length / 2,
                        c.file_offset + c.stored_length - 1}) {
      Bytes b = *file_;
      b[at] ^= 0x01;
      auto r = SnapshotReader::OpenBuffer(b, "c");
      ASSERT_TRUE(r.ok()) << r.status().message();  // chunks are checked on use
      Status st = (*r)->VerifyAll();
      ASSERT_FALSE(st.ok());
      char want[160];
      std::snprintf(want, sizeof want, "chunk %zu (gpa 0x%llx-0x%llx) at file offset 0x%llx: checksum mismatch",
                    i, (unsigned long long)c.gpa, (unsigned long long)(c.gpa + c.page_count * 4096 - 1),
                    (unsigned long long)c.file_offset);
      EXPECT_TRUE(Contains(st.message(), want)) << st.message() << "\nwant: " << want;
      // The other chunks still read.
      Bytes out(c.page_count * 4096);
      for (size_t j = 0; j < chunks_->size(); ++j) {
        EXPECT_EQ((*r)->ReadChunk(j, out.data()).ok(), j != i);
      }
    }
  }
}

TEST_F(Corruption, BitFlipInManifestAndFooterIsNamed) {
  auto s = testing::FindSections(*file_);
  for (uint64_t at = s.manifest_offset; at < s.manifest_offset + s.manifest_length; at += 13) {
    Bytes b = *file_;
    b[at] ^= 0x40;
    Status st = OpenAndVerify(b);
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(Contains(st.message(), "manifest at file offset " + Hex(s.manifest_offset) +
                                           " (" + std::to_string(s.manifest_length) +
                                           " bytes): checksum mismatch"))
        << st.message();
  }
  for (uint64_t at = s.footer_offset; at < file_->size(); ++at) {
    Bytes b = *file_;
    b[at] ^= 0x02;
    Status st = OpenAndVerify(b);
    ASSERT_FALSE(st.ok());
    EXPECT_TRUE(Contains(st.message(), "footer at file offset " + Hex(s.footer_offset)))
        << st.message();
  }
}

TEST_F(Corruption, FlipsAnywhereNeverCrashOrPass) {
  // Every byte that matters: the padding between chunks is the only part no
  // checksum covers, and it is never read.
  for (size_t at = 0; at < file_->size(); at += 7) {
    Bytes b = *file_;
    b[at] ^= 0x80;
    Status st = OpenAndVerify(b);
    bool in_chunk = at < layout::kHeaderSize;
    for (const auto& c : *chunks_) in_chunk |= at >= c.file_offset && at < c.file_offset + c.stored_length;
    auto s = testing::FindSections(*file_);
    const bool covered = in_chunk || at >= s.manifest_offset;
    if (covered) {
      EXPECT_FALSE(st.ok()) << "flip at " << at;
    }
  }
}

// Valid checksums, wrong structure: the reader's index checks.
struct Bad {
  const char* name;
  std::function<void(schema::Manifest::Builder)> edit;
  const char* message;
};

TEST_F(Corruption, StructuralChecksOfTheChunkIndex) {
  auto s = testing::FindSections(*file_);
  const std::string m = "manifest at file offset " + Hex(s.manifest_offset) + ": ";
  const uint64_t c1off = (*chunks_)[1].file_offset;
  std::vector<Bad> cases = {
      {"bitmap length", [](auto b) { b.getChunks()[2].initPresentBitmap(1); },
       "chunk 2 (gpa 0x314000-0x31dfff) at file offset 0x"},
      {"bitmap length 2", [](auto b) { b.getChunks()[2].initPresentBitmap(1); },
       "present bitmap is 1 bytes, expected 2"},
      {"popcount", [](auto b) { b.getChunks()[0].setRawLength(4096); },
       "chunk 0 (gpa 0x300000-0x309fff) at file offset 0x1000: raw length 4096 is not 10 present pages"},
      {"offset beyond chunk area", [](auto b) { b.getChunks()[1].setFileOffset(1ull << 40); },
       "chunk 1 (gpa 0x30a000-0x313fff) at file offset 0x10000000000: stored bytes"},
      {"misaligned", [](auto b) { b.getChunks()[1].setFileOffset(b.getChunks()[1].getFileOffset() + 8); },
       "misaligned or outside the chunk area"},
      {"overlap", [](auto b) { b.getChunks()[2].setGuestPhysAddr(0x309000); },
       "chunk 2 (gpa 0x309000-0x312fff) at file offset 0x"},
      {"overlap 2", [](auto b) { b.getChunks()[2].setGuestPhysAddr(0x309000); },
       "overlaps or precedes the chunk before it"},
      {"outside region", [](auto b) { b.getChunks()[3].setGuestPhysAddr(0x400000); },
       "chunk 3 (gpa 0x400000-0x409fff): not inside one memory region"},
      {"overflow", [](auto b) { b.getChunks()[3].setGuestPhysAddr(0xfffffffffffff000ull); },
       "chunk 3 (gpa 0xfffffffffffff000): end overflows 64 bits"},
      {"page count", [](auto b) { b.getChunks()[0].setPageCount(0); }, "page count 0 outside"},
      {"huge page count", [](auto b) { b.getChunks()[0].setPageCount(1u << 30); },
       "page count 1073741824 outside"},
      {"compression", [](auto b) { b.getChunks()[0].setCompression(schema::Compression(7)); },
       "unknown compression 7"},
      {"page size", [](auto b) { b.getMemory().setPageSize(4097); }, "memory page size 4097"},
      {"version", [](auto b) { b.setFormatMinor(3); }, "format version 1.3 disagrees with the header's 1.0"},
      {"stray bits", [](auto b) { b.getChunks()[0].getPresentBitmap()[1] |= 0x80; },
       "bitmap has bits set past page 9"},
      {"defined", [](auto b) { b.getChunks()[0].initDefinedBitmap(2); },
       "a page is present but not defined"},
      {"parent id", [](auto b) { b.initParent().setPath("p"); }, "parent snapshot id is 0 bytes"},
      {"region order", [](auto b) {
         auto r = b.getMemory().initRegions(2);
         r[0].setGuestPhysAddr(0x300000); r[0].setSize(0x28000);
         r[1].setGuestPhysAddr(0x200000); r[1].setSize(0x1000);
       }, "memory region 1 (gpa 0x200000, 4096 bytes): overlaps or precedes"},
  };
  (void)c1off;
  for (const auto& c : cases) {
    Bytes b = testing::RewriteManifest(*file_, c.edit);
    Status st = OpenAndVerify(b);
    ASSERT_FALSE(st.ok()) << c.name;
    EXPECT_EQ(st.code(), Code::kCorruption) << c.name;
    EXPECT_TRUE(Contains(st.message(), c.message)) << c.name << ": " << st.message();
    EXPECT_TRUE(Contains(st.message(), "manifest")) << c.name << ": " << st.message();
  }
}

TEST_F(Corruption, WrongCodecDetailsAreCaughtWhenTheChunkIsRead) {
  // A stored checksum that matches but a raw length the frame disagrees with
  // cannot be built without also breaking the popcount check, so break the raw
  // checksum instead: decompression succeeds, the raw checksum does not.
  Bytes b = testing::RewriteManifest(*file_, [](auto m) { m.getChunks()[0].setRawChecksum(1); });
  Status st = OpenAndVerify(b);
  EXPECT_TRUE(Contains(st.message(), "chunk 0 (gpa 0x300000-0x309fff) at file offset 0x1000: raw "
                                     "checksum mismatch after decompression"))
      << st.message();
  // A raw chunk claiming to be zstd.
  b = testing::RewriteManifest(*file_, [](auto m) { m.getChunks()[1].setCompression(schema::Compression::ZSTD); });
  st = OpenAndVerify(b);
  EXPECT_TRUE(Contains(st.message(), "chunk 1")) << st.message();
  EXPECT_TRUE(Contains(st.message(), "zstd")) << st.message();
}

TEST_F(Corruption, GarbageManifestWithValidChecksumIsCorruptionNotACrash) {
  auto s = testing::FindSections(*file_);
  testing::Rng rng(11);
  for (int i = 0; i < 200; ++i) {
    Bytes b = *file_;
    // Scribble over a few words, then fix the manifest checksum and footer.
    for (int k = 0; k < 4; ++k) {
      b[s.manifest_offset + rng.Next() % s.manifest_length] = uint8_t(rng.Next());
    }
    uint8_t* foot = b.data() + s.footer_offset;
    layout::Footer f{s.manifest_offset, s.manifest_length,
                     layout::Checksum(b.data() + s.manifest_offset, s.manifest_length), 0};
    layout::EncodeFooter(f, foot);
    Status st = OpenAndVerify(b);
    if (!st.ok()) {
      EXPECT_EQ(st.code(), Code::kCorruption) << st.message();
      EXPECT_TRUE(Contains(st.message(), "manifest") || Contains(st.message(), "chunk"))
          << st.message();
    }
  }
}

TEST(Versions, NewerMinorIsReadNewerMajorIsRejected) {
  testing::TempDir d;
  auto w = SnapshotWriter::Create(d / "v.vmsnap", WriterOptions{});
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Commit().ok());
  Bytes f = testing::ReadFileBytes(d / "v.vmsnap");
  Bytes minor = testing::RewriteManifest(f, [](auto m) { m.setFormatMinor(7); });
  testing::SetHeaderVersion(minor, 1, 7);
  auto r = SnapshotReader::OpenBuffer(minor, "minor");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)->format_minor(), 7);
  Bytes major = f;
  testing::SetHeaderVersion(major, 2, 0);
  auto r2 = SnapshotReader::OpenBuffer(major, "major");
  ASSERT_FALSE(r2.ok());
  EXPECT_EQ(r2.status().code(), Code::kUnsupported);
  EXPECT_EQ(r2.status().message(), "unsupported format version 2.0 (this vmsnap reads 1.x)");
}

TEST(Versions, EmptyAndTinyFiles) {
  EXPECT_EQ(SnapshotReader::OpenBuffer({}, "e").status().message(), "header: file is empty");
  testing::TempDir d;
  testing::WriteFileBytes(d / "empty", {});
  auto r = SnapshotReader::Open(d / "empty");
  EXPECT_EQ(r.status().code(), Code::kCorruption);
  EXPECT_EQ(SnapshotReader::Open(d / "nope").status().code(), Code::kNotFound);
  EXPECT_EQ(SnapshotReader::Open(d.path()).status().code(), Code::kInvalidArgument);
}

}  // namespace
}  // namespace vmsnap
