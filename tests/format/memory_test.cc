// SPDX-License-Identifier: MIT
// Guest memory through the writer and back: zero, repeated and random pages in
// several regions, both codecs, chunk sizes that do not divide the regions;
// incremental chains; parent errors; page iteration and statistics.
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "format/chain.h"
#include "format/memory.h"
#include "format/reader.h"
#include "format/writer.h"
#include "tests/format/test_util.h"

namespace vmsnap {
namespace {

using testing::Bytes;
using testing::Rng;
using testing::TempDir;

constexpr uint64_t kPage = 4096;

struct Region {
  uint64_t gpa;
  Bytes data;
};

// Page i of a region: zero, a repeated byte pattern, or random, in a mix that
// also produces all-zero and all-random chunks.
std::vector<Region> MakeRegions(uint64_t seed) {
  Rng rng(seed);
  std::vector<Region> regs;
  const std::pair<uint64_t, uint64_t> layout[] = {{0x0, 37}, {0x100000, 300}, {0x40000000, 513}};
  for (auto [gpa, pages] : layout) {
    Region r{gpa, Bytes(pages * kPage, 0)};
    for (uint64_t p = 0; p < pages; ++p) {
      uint8_t* pg = r.data.data() + p * kPage;
      const bool zero_run = p >= 64 && p < 192;  // whole chunks of zeros in region 1
      switch (zero_run ? 0 : (p * 7 + gpa / kPage) % 3) {
        case 0: break;
        case 1: std::memset(pg, int(0x11 * (p % 15 + 1)), kPage); break;
        default: rng.Fill(pg, kPage);
      }
    }
    regs.push_back(std::move(r));
  }
  return regs;
}

void SetRegions(schema::Manifest::Builder m, const std::vector<Region>& regs) {
  auto l = m.getMemory().initRegions(unsigned(regs.size()));
  for (unsigned i = 0; i < regs.size(); ++i) {
    l[i].setSlot(i);
    l[i].setGuestPhysAddr(regs[i].gpa);
    l[i].setSize(regs[i].data.size());
  }
}

Status WriteFull(const std::string& path, const std::vector<Region>& regs, WriterOptions o) {
  VMSNAP_ASSIGN_OR_RETURN(auto w, SnapshotWriter::Create(path, o));
  SetRegions(w->manifest(), regs);
  for (const auto& r : regs) VMSNAP_RETURN_IF_ERROR(w->AddMemory(r.gpa, r.data.data(), r.data.size()));
  return w->Commit();
}

struct Params {
  schema::Compression compression;
  uint32_t chunk_pages;
  unsigned threads;
};

class MemoryRoundTrip : public ::testing::TestWithParam<Params> {};

TEST_P(MemoryRoundTrip, ComesBackByteIdentical) {
  const Params p = GetParam();
  TempDir dir;
  const std::string path = dir / "mem.vmsnap";
  auto regs = MakeRegions(42);
  WriterOptions o;
  o.compression = p.compression;
  o.chunk_pages = p.chunk_pages;
  o.threads = p.threads;
  uint64_t last_done = 0, calls = 0;
  o.progress = [&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last_done);
    EXPECT_LE(done, total);
    last_done = done;
    ++calls;
  };
  Status s = WriteFull(path, regs, o);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_GT(calls, 0u);
  EXPECT_EQ(last_done, (37 + 300 + 513) * kPage);

  auto r = SnapshotReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  const auto& idx = (*r)->chunk_index();
  // Every chunk through ReadChunk.
  uint64_t nonzero_pages = 0;
  for (const auto& reg : regs) {
    for (uint64_t q = 0; q < reg.data.size(); q += kPage) {
      bool z = true;
      for (uint64_t k = 0; k < kPage && z; ++k) z = reg.data[q + k] == 0;
      nonzero_pages += !z;
    }
  }
  uint64_t covered = 0;
  for (size_t i = 0; i < idx.size(); ++i) {
    const ChunkInfo& c = idx[i];
    EXPECT_LE(c.page_count, p.chunk_pages);
    const Region* reg = nullptr;
    for (const auto& rg : regs) {
      if (c.gpa >= rg.gpa && c.gpa < rg.gpa + rg.data.size()) reg = &rg;
    }
    ASSERT_NE(reg, nullptr);
    Bytes out(c.page_count * kPage, 0xee);
    Status rs = (*r)->ReadChunk(i, out.data());
    ASSERT_TRUE(rs.ok()) << rs.message();
    EXPECT_EQ(0, std::memcmp(out.data(), reg->data.data() + (c.gpa - reg->gpa), out.size()))
        << "chunk " << i;
    covered += c.page_count;
    if (c.stored_length > 0) {
      EXPECT_EQ(c.file_offset % layout::kChunkAlign, 0u);
      if (!c.compressed) {
        // Raw chunks hold the stored pages back to back: mappable.
        auto sb = (*r)->StoredBytes(i);
        ASSERT_TRUE(sb.ok());
        EXPECT_EQ(sb->size(), c.raw_length);
      }
    }
  }
  EXPECT_EQ(covered, 37u + 300 + 513);
  MemoryStats st = ComputeMemoryStats((*r)->manifest());
  EXPECT_EQ(st.present_pages, nonzero_pages);
  EXPECT_EQ(st.zero_pages, 37 + 300 + 513 - nonzero_pages);
  EXPECT_EQ(st.size, (37 + 300 + 513) * kPage);
  EXPECT_EQ(st.raw_bytes, nonzero_pages * kPage);
  EXPECT_EQ(st.absent_pages, 0u);
  if (p.compression == schema::Compression::ZSTD) {
    EXPECT_LT(st.stored_bytes, st.raw_bytes);  // the repeated pages compress
  } else {
    EXPECT_EQ(st.stored_bytes, st.raw_bytes);
  }
  EXPECT_TRUE((*r)->VerifyAll().ok());

  // And through the chain, including a range spanning a region and a hole.
  auto chain = SnapshotChain::Open(path);
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  for (const auto& reg : regs) {
    Bytes out(reg.data.size(), 0xee);
    ASSERT_TRUE(chain->ReadMemory(reg.gpa, out.size(), out.data()).ok());
    EXPECT_EQ(out, reg.data);
  }
  Bytes span(37 * kPage + 0x3000, 0xee);
  ASSERT_TRUE(chain->ReadMemory(0x123, span.size(), span.data()).ok());
  for (size_t i = 0; i < span.size(); ++i) {
    uint64_t gpa = 0x123 + i;
    uint8_t want = gpa < 37 * kPage ? regs[0].data[gpa] : 0;
    if (span[i] != want) {
      ADD_FAILURE() << "gpa " << std::hex << gpa;
      break;
    }
  }
  // ForEachPage visits every region page in order with the right bytes.
  uint64_t visited = 0, prev = 0;
  Status fe = ForEachPage(*chain, [&](const PageView& v) {
    EXPECT_TRUE(visited == 0 || v.gpa > prev);
    prev = v.gpa;
    ++visited;
    for (const auto& reg : regs) {
      if (v.gpa >= reg.gpa && v.gpa < reg.gpa + reg.data.size()) {
        EXPECT_EQ(0, std::memcmp(v.bytes.data(), reg.data.data() + (v.gpa - reg.gpa), kPage));
      }
    }
    return Status::Ok();
  });
  ASSERT_TRUE(fe.ok()) << fe.message();
  EXPECT_EQ(visited, 37u + 300 + 513);
  uint64_t stored_visits = 0;
  ASSERT_TRUE(ForEachPage(*chain, [&](const PageView& v) {
                EXPECT_TRUE(v.stored);
                ++stored_visits;
                return Status::Ok();
              }, {.skip_zero = true}).ok());
  EXPECT_EQ(stored_visits, nonzero_pages);
}

INSTANTIATE_TEST_SUITE_P(
    Codecs, MemoryRoundTrip,
    ::testing::Values(Params{schema::Compression::ZSTD, 64, 1}, Params{schema::Compression::ZSTD, 100, 3},
                      Params{schema::Compression::NONE, 64, 2}, Params{schema::Compression::NONE, 256, 0},
                      Params{schema::Compression::ZSTD, 1, 2}));

// writer.h: once progress reports `done` bytes, the writer never reads the
// first `done` bytes added again. The callback scribbles over every buffer
// it has reported done; the file must still hold the original bytes.
TEST(Memory, BytesReportedDoneAreNotReadAgain) {
  for (auto codec : {schema::Compression::ZSTD, schema::Compression::NONE}) {
    SCOPED_TRACE(codec == schema::Compression::ZSTD ? "zstd" : "none");
    TempDir dir;
    const std::string path = dir / "mem.vmsnap";
    constexpr uint64_t kBuf = 64 * kPage, kBufs = 24;
    Rng rng(7);
    std::vector<Bytes> bufs(kBufs, Bytes(kBuf));
    for (auto& b : bufs) rng.Fill(b.data(), b.size());
    const std::vector<Bytes> original = bufs;
    WriterOptions o;
    o.compression = codec;
    o.chunk_pages = 16;  // several chunks per buffer, several workers in flight
    o.threads = 4;
    size_t scribbled = 0;
    o.progress = [&](uint64_t done, uint64_t) {
      while (scribbled < kBufs && (scribbled + 1) * kBuf <= done) {
        std::memset(bufs[scribbled].data(), 0xab, kBuf);
        ++scribbled;
      }
    };
    {
      auto w = SnapshotWriter::Create(path, o);
      ASSERT_TRUE(w.ok()) << w.status().message();
      auto l = (*w)->manifest().getMemory().initRegions(1);
      l[0].setGuestPhysAddr(0);
      l[0].setSize(kBuf * kBufs);
      for (uint64_t i = 0; i < kBufs; ++i) {
        Status s = (*w)->AddMemory(i * kBuf, bufs[i].data(), kBuf);
        ASSERT_TRUE(s.ok()) << s.message();
      }
      Status s = (*w)->Commit();
      ASSERT_TRUE(s.ok()) << s.message();
    }
    EXPECT_EQ(scribbled, kBufs) << "progress did not report all memory done";
    auto chain = SnapshotChain::Open(path);
    ASSERT_TRUE(chain.ok()) << chain.status().message();
    Bytes back(kBuf);
    for (uint64_t i = 0; i < kBufs; ++i) {
      ASSERT_TRUE(chain->ReadMemory(i * kBuf, kBuf, back.data()).ok());
      EXPECT_TRUE(back == original[i]) << "buffer " << i << " was read after it was reported done";
    }
  }
}

TEST(Memory, UncompressedPagesAreMappableAtTheirOffset) {
  TempDir dir;
  auto regs = MakeRegions(7);
  WriterOptions o;
  o.compression = schema::Compression::NONE;
  o.chunk_pages = 32;
  ASSERT_TRUE(WriteFull(dir / "raw.vmsnap", regs, o).ok());
  Bytes file = testing::ReadFileBytes(dir / "raw.vmsnap");
  auto r = SnapshotReader::Open(dir / "raw.vmsnap");
  ASSERT_TRUE(r.ok());
  for (const ChunkInfo& c : (*r)->chunk_index()) {
    EXPECT_FALSE(c.compressed);
    uint64_t k = 0;
    for (uint32_t i = 0; i < c.page_count; ++i) {
      if (!c.IsPresent(i)) continue;
      const uint64_t gpa = c.gpa + i * kPage;
      const Region* reg = gpa < 0x100000 ? &regs[0] : gpa < 0x40000000 ? &regs[1] : &regs[2];
      ASSERT_EQ(0, std::memcmp(file.data() + c.file_offset + k * kPage,
                               reg->data.data() + (gpa - reg->gpa), kPage));
      ++k;
    }
  }
}

TEST(Memory, WriterRejectsMisuse) {
  TempDir dir;
  auto w = SnapshotWriter::Create(dir / "x.vmsnap", WriterOptions{});
  ASSERT_TRUE(w.ok());
  Bytes page(kPage, 1);
  EXPECT_EQ((*w)->AddMemory(0x10, page.data(), kPage).code(), Code::kInvalidArgument);
  ASSERT_TRUE((*w)->AddMemory(0x2000, page.data(), kPage).ok());
  EXPECT_EQ((*w)->AddMemory(0x1000, page.data(), kPage).code(), Code::kInvalidArgument);
  // No region covers 0x2000: Commit refuses and leaves nothing behind.
  Status c = (*w)->Commit();
  EXPECT_EQ(c.code(), Code::kInvalidArgument);
  EXPECT_NE(c.message().find("outside every region"), std::string::npos) << c.message();
  EXPECT_TRUE(dir.List().empty());
  WriterOptions bad;
  bad.chunk_pages = layout::kMaxChunkPages + 1;
  EXPECT_EQ(SnapshotWriter::Create(dir / "y.vmsnap", bad).status().code(), Code::kInvalidArgument);
}

// A base snapshot and two incremental children, built with AddPages.
class Incremental : public ::testing::Test {
 protected:
  static constexpr uint64_t kPages = 200;
  void SetUp() override {
    Rng rng(99);
    Bytes mem(kPages * kPage, 0);
    for (uint64_t p = 0; p < kPages; ++p) {
      if (p % 4) rng.Fill(mem.data() + p * kPage, kPage);
    }
    states_.push_back(mem);
    ASSERT_TRUE(WriteLayer(dir_ / "base.vmsnap", mem, nullptr, nullptr, "").ok());
    // Layer 1: dirty pages 10..59 (some zeroed, some rewritten).
    Bytes m1 = mem;
    Bytes def1((kPages + 7) / 8, 0);
    for (uint64_t p = 10; p < 60; ++p) {
      def1[p / 8] |= uint8_t(1 << (p % 8));
      if (p % 3 == 0) std::memset(m1.data() + p * kPage, 0, kPage);
      else std::memset(m1.data() + p * kPage, int(p), kPage);
    }
    states_.push_back(m1);
    ASSERT_TRUE(WriteLayer(dir_ / "l1.vmsnap", m1, def1.data(), &base_id_, "base.vmsnap").ok());
    // Layer 2: every 7th page everywhere.
    Bytes m2 = m1;
    Bytes def2((kPages + 7) / 8, 0);
    for (uint64_t p = 0; p < kPages; p += 7) {
      def2[p / 8] |= uint8_t(1 << (p % 8));
      rng.Fill(m2.data() + p * kPage, kPage);
    }
    states_.push_back(m2);
    ASSERT_TRUE(WriteLayer(dir_ / "l2.vmsnap", m2, def2.data(), &l1_id_, "l1.vmsnap").ok());
  }

  Status WriteLayer(const std::string& path, const Bytes& mem, const uint8_t* defined,
                    const layout::SnapshotId* parent, const std::string& parent_path) {
    WriterOptions o;
    o.chunk_pages = 48;
    VMSNAP_ASSIGN_OR_RETURN(auto w, SnapshotWriter::Create(path, o));
    auto regs = w->manifest().getMemory().initRegions(1);
    regs[0].setGuestPhysAddr(0x100000);
    regs[0].setSize(mem.size());
    if (parent) {
      auto pr = w->manifest().initParent();
      pr.setSnapshotId(kj::arrayPtr(parent->data(), parent->size()));
      pr.setPath(parent_path.c_str());
      pr.setDepth(parent == &base_id_ ? 1 : 2);
      VMSNAP_RETURN_IF_ERROR(w->AddPages(0x100000, mem.data(), mem.size(), defined));
    } else {
      VMSNAP_RETURN_IF_ERROR(w->AddMemory(0x100000, mem.data(), mem.size()));
    }
    VMSNAP_RETURN_IF_ERROR(w->Commit());
    if (!parent) base_id_ = w->id();
    else if (parent == &base_id_) l1_id_ = w->id();
    return Status::Ok();
  }

  TempDir dir_;
  std::vector<Bytes> states_;
  layout::SnapshotId base_id_{}, l1_id_{};
};

TEST_F(Incremental, ThreeLayersMergeToTheLatestMemory) {
  for (int layer = 0; layer < 3; ++layer) {
    const char* names[] = {"base.vmsnap", "l1.vmsnap", "l2.vmsnap"};
    auto chain = SnapshotChain::Open(dir_ / names[layer]);
    ASSERT_TRUE(chain.ok()) << chain.status().message();
    EXPECT_EQ(chain->layers().size(), size_t(layer + 1));
    Bytes out(kPages * kPage, 0xee);
    ASSERT_TRUE(chain->ReadMemory(0x100000, out.size(), out.data()).ok());
    EXPECT_TRUE(out == states_[size_t(layer)]) << "layer " << layer;
    // Unaligned partial read across chunk boundaries.
    Bytes part(50 * kPage + 17, 0);
    ASSERT_TRUE(chain->ReadMemory(0x100000 + 45 * kPage + 3, part.size(), part.data()).ok());
    EXPECT_EQ(0, std::memcmp(part.data(), states_[size_t(layer)].data() + 45 * kPage + 3, part.size()));
  }
  auto chain = SnapshotChain::Open(dir_ / "l2.vmsnap");
  ASSERT_TRUE(chain.ok());
  auto s = chain->Locate(0x100000 + 7 * kPage);
  EXPECT_EQ(s.layer, 2);
  EXPECT_TRUE(s.stored);
  s = chain->Locate(0x100000 + 12 * kPage);  // zeroed by layer 1 (12 % 3 == 0)
  EXPECT_EQ(s.layer, 1);
  EXPECT_FALSE(s.stored);
  s = chain->Locate(0x100000 + 11 * kPage);
  EXPECT_EQ(s.layer, 1);
  EXPECT_TRUE(s.stored);
  s = chain->Locate(0x100000 + 1 * kPage);
  EXPECT_EQ(s.layer, 0);
  EXPECT_EQ(chain->Locate(0x5000).layer, -1);
  auto l1 = SnapshotReader::Open(dir_ / "l1.vmsnap");
  ASSERT_TRUE(l1.ok());
  MemoryStats st = ComputeMemoryStats((*l1)->manifest());
  EXPECT_EQ(st.defined_pages, 50u);
  EXPECT_EQ(st.present_pages, 34u);  // 10..59 minus the 16 multiples of 3
  EXPECT_EQ(st.zero_pages, 16u);
  EXPECT_EQ(st.absent_pages, kPages - 50);
  for (const ChunkInfo& c : (*l1)->chunk_index()) EXPECT_NE(c.defined, nullptr);
}

TEST_F(Incremental, MissingParentIsNamed) {
  ASSERT_EQ(::unlink((dir_ / "base.vmsnap").c_str()), 0);
  auto chain = SnapshotChain::Open(dir_ / "l2.vmsnap");
  ASSERT_FALSE(chain.ok());
  EXPECT_EQ(chain.status().code(), Code::kNotFound);
  EXPECT_EQ(chain.status().message(), "parent snapshot " + dir_.path() + "/base.vmsnap of " +
                                          dir_.path() + "/l1.vmsnap is missing");
}

// A recorded parent path is the path itself when absolute, else relative
// to the child's folder; a child named without a folder names its parent
// without one (not "./base.vmsnap").
TEST(Chain, ParentPathsAreRelativeToTheChildsFolder) {
  EXPECT_EQ(ParentPathOf("/s/l1.vmsnap", "base.vmsnap"), "/s/base.vmsnap");
  EXPECT_EQ(ParentPathOf("/l1.vmsnap", "base.vmsnap"), "/base.vmsnap");
  EXPECT_EQ(ParentPathOf("s/l1.vmsnap", "../b/base.vmsnap"), "s/../b/base.vmsnap");
  EXPECT_EQ(ParentPathOf("l1.vmsnap", "base.vmsnap"), "base.vmsnap");
  EXPECT_EQ(ParentPathOf("s/l1.vmsnap", "/abs/base.vmsnap"), "/abs/base.vmsnap");
}

TEST_F(Incremental, WrongParentIsNamed) {
  // Replace the base with another full snapshot: same name, different content.
  Bytes other(kPages * kPage, 0x77);
  ASSERT_EQ(::unlink((dir_ / "base.vmsnap").c_str()), 0);
  layout::SnapshotId saved = base_id_;
  ASSERT_TRUE(WriteLayer(dir_ / "base.vmsnap", other, nullptr, nullptr, "").ok());
  auto chain = SnapshotChain::Open(dir_ / "l1.vmsnap");
  ASSERT_FALSE(chain.ok());
  EXPECT_EQ(chain.status().code(), Code::kCorruption);
  EXPECT_EQ(chain.status().message(),
            "parent snapshot " + dir_.path() + "/base.vmsnap of " + dir_.path() +
                "/l1.vmsnap is not the recorded file (id " + layout::IdToHex(base_id_) +
                ", expected " + layout::IdToHex(saved) + ")");
}

}  // namespace
}  // namespace vmsnap
