// SPDX-License-Identifier: MIT
// The adaptive codec (WriterOptions::adaptive, `--compress auto`): with a
// slow output it compresses, with a slow compressor it stores raw, and
// whatever it chose the file verifies and reads back as the memory given.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "format/chain.h"
#include "format/io.h"
#include "format/reader.h"
#include "format/writer.h"
#include "tests/format/test_util.h"

namespace vmsnap {
namespace {

using testing::Bytes;
using testing::TempDir;

constexpr uint64_t kPage = 4096;
constexpr uint32_t kChunkPages = 32;  // 128 KiB chunks: many decisions, little CPU
constexpr uint64_t kChunks = 160;

// Text-like memory (log lines from a small vocabulary, as zstd meets in real
// guests: it shrinks to about a third), with a zero page now and then.
Bytes TextMemory() {
  static const char* const kWords[] = {"kernel:", "eth0", "link", "up", "error", "return", "static",
                                       "int",     "void", "0x1f", "=",  "{",     "}",      "page",
                                       "fault",   "ok",   "GET",  "/index.html", "200",  "user"};
  Bytes b(kChunks * kChunkPages * kPage, 0);
  uint64_t x = 0x9e3779b97f4a7c15ull;
  size_t i = 0;
  while (i < b.size()) {
    if ((i / kPage) % 11 == 5) {  // a zero page
      i += kPage;
      continue;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const char* w = kWords[x % (sizeof kWords / sizeof *kWords)];
    for (const char* c = w; *c && i < b.size(); ++c) b[i++] = uint8_t(*c);
    if (i < b.size()) b[i++] = (x >> 20) % 9 == 0 ? '\n' : ' ';
  }
  return b;
}

// An output that takes `delay` per write: a slow disk.
class SlowFile final : public WritableFile {
 public:
  SlowFile(std::unique_ptr<WritableFile> base, std::chrono::microseconds delay)
      : base_(std::move(base)), delay_(delay) {}
  Status Append(const void* data, size_t len) override {
    std::this_thread::sleep_for(delay_);
    return base_->Append(data, len);
  }
  Status Sync() override { return base_->Sync(); }
  Status Close() override { return base_->Close(); }

 private:
  std::unique_ptr<WritableFile> base_;
  std::chrono::microseconds delay_;
};

class SlowEnv final : public Env {
 public:
  explicit SlowEnv(std::chrono::microseconds delay) : delay_(delay) {}
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path, unsigned mode) override {
    VMSNAP_ASSIGN_OR_RETURN(auto base, Env::Default()->NewWritableFile(path, mode));
    return std::unique_ptr<WritableFile>(new SlowFile(std::move(base), delay_));
  }
  Status Rename(const std::string& from, const std::string& to) override {
    return Env::Default()->Rename(from, to);
  }
  Status Remove(const std::string& path) override { return Env::Default()->Remove(path); }
  Status SyncDir(const std::string& dir) override { return Env::Default()->SyncDir(dir); }

 private:
  std::chrono::microseconds delay_;
};

// TextMemory with every other chunk overwritten by random bytes
// (encrypted or already compressed data: incompressible).
Bytes HalfRandomMemory() {
  Bytes b = TextMemory();
  uint64_t x = 0x2545f4914f6cdd1dull;
  for (uint64_t c = 1; c < kChunks; c += 2) {
    for (uint64_t i = 0; i < kChunkPages * kPage; i += 8) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::memcpy(&b[c * kChunkPages * kPage + i], &x, 8);
    }
  }
  return b;
}

struct Outcome {
  size_t chunks = 0, compressed = 0;
  size_t compress_calls = 0;  // chunks zstd was run on
  std::set<int> levels;       // the zstd levels tried
  std::vector<bool> chunk_compressed;  // by chunk, in gpa order
};

Outcome Save(const std::string& path, const Bytes& mem, WriterOptions o) {
  Outcome out;
  std::mutex mu;
  auto inner = o.before_compress;
  o.before_compress = [&](int level) {
    {
      std::lock_guard<std::mutex> lk(mu);
      out.levels.insert(level);
      ++out.compress_calls;
    }
    if (inner) inner(level);
  };
  o.chunk_pages = kChunkPages;
  o.threads = 2;
  // What the tests vary is the output's and the compressor's speed, not the
  // load other processes put on the machine.
  if (!o.machine_busy) o.machine_busy = [] { return 0.0; };
  {
    auto w = SnapshotWriter::Create(path, o);
    EXPECT_TRUE(w.ok()) << w.status().message();
    if (!w.ok()) return out;
    auto l = (*w)->manifest().getMemory().initRegions(1);
    l[0].setGuestPhysAddr(0);
    l[0].setSize(mem.size());
    // In pieces, as guest memory regions come.
    for (uint64_t off = 0; off < mem.size(); off += 16 * kChunkPages * kPage) {
      const uint64_t n = std::min<uint64_t>(16 * kChunkPages * kPage, mem.size() - off);
      Status s = (*w)->AddMemory(off, mem.data() + off, n);
      EXPECT_TRUE(s.ok()) << s.message();
    }
    Status s = (*w)->Commit();
    EXPECT_TRUE(s.ok()) << s.message();
  }
  auto r = SnapshotReader::Open(path);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (!r.ok()) return out;
  for (const ChunkInfo& c : (*r)->chunk_index()) {
    if (c.raw_length == 0) continue;
    ++out.chunks;
    out.compressed += c.compressed;
    out.chunk_compressed.push_back(c.compressed);
    if (!c.compressed) {
      EXPECT_EQ(c.file_offset % kPage, 0u) << "raw chunk at gpa " << c.gpa << " is not page-aligned";
      EXPECT_EQ(c.stored_length, c.raw_length);
    }
  }
  Status v = (*r)->VerifyAll();
  EXPECT_TRUE(v.ok()) << v.message();
  return out;
}

void ExpectSameMemory(const std::string& path, const Bytes& mem) {
  auto chain = SnapshotChain::Open(path);
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  Bytes back(mem.size(), 0xee);
  Status s = chain->ReadMemory(0, back.size(), back.data());
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(back == mem) << path << " does not read back as the memory saved";
}

WriterOptions Auto() {
  WriterOptions o;
  o.compression = schema::Compression::ZSTD;
  o.adaptive = true;
  o.zstd_level = 9;
  return o;
}

// The output is the bottleneck (each write waits 4 ms, far longer than a
// chunk takes to compress): auto compresses most chunks and climbs above
// level 1, since the cores have time to spare.
TEST(AdaptiveCodec, CompressesHarderWhenTheOutputIsSlow) {
  TempDir dir;
  const Bytes mem = TextMemory();
  SlowEnv slow(std::chrono::microseconds(4000));
  WriterOptions o = Auto();
  o.env = &slow;
  Outcome got = Save(dir / "slow-disk.vmsnap", mem, o);
  ASSERT_EQ(got.chunks, kChunks);
  // auto starts raw and climbs a tenth of a rung per 10 ms.
  EXPECT_GE(got.compressed, kChunks * 3 / 4) << "auto stored raw chunks although the output was the bottleneck";
  ASSERT_FALSE(got.levels.empty());
  EXPECT_GT(*got.levels.rbegin(), 1) << "auto never compressed harder than level 1 with an idle compressor";
  ExpectSameMemory(dir / "slow-disk.vmsnap", mem);
}

// The compressor is the bottleneck (each chunk it compresses takes 15 ms
// more, the output is a local file): auto stores most chunks raw.
TEST(AdaptiveCodec, StoresRawWhenCompressionCannotKeepUp) {
  TempDir dir;
  const Bytes mem = TextMemory();
  WriterOptions o = Auto();
  o.before_compress = [](int) { std::this_thread::sleep_for(std::chrono::milliseconds(15)); };
  Outcome got = Save(dir / "slow-cpu.vmsnap", mem, o);
  ASSERT_EQ(got.chunks, kChunks);
  EXPECT_LE(got.compressed, kChunks / 4) << "auto kept compressing although compression was the bottleneck";
  ExpectSameMemory(dir / "slow-cpu.vmsnap", mem);
}

// Every core busy (other processes): auto stores raw, even with a slow
// output, since compressing would wait for a core.
TEST(AdaptiveCodec, StoresRawWhenTheMachineIsBusy) {
  TempDir dir;
  const Bytes mem = TextMemory();
  SlowEnv slow(std::chrono::microseconds(1000));
  WriterOptions o = Auto();
  o.env = &slow;
  o.machine_busy = [] { return 0.97; };
  Outcome got = Save(dir / "busy.vmsnap", mem, o);
  ASSERT_EQ(got.chunks, kChunks);
  EXPECT_LE(got.compressed, kChunks / 4) << "auto kept compressing on a machine with no core to spare";
  ExpectSameMemory(dir / "busy.vmsnap", mem);
}

// Half the chunks random, the output slow: auto compresses the text chunks
// and stores the random ones raw without running zstd on them (every chunk
// zstd was run on came out compressed).
TEST(AdaptiveCodec, SparesZstdTheRandomChunksAndCompressesTheText) {
  TempDir dir;
  const Bytes mem = HalfRandomMemory();
  SlowEnv slow(std::chrono::microseconds(4000));
  WriterOptions o = Auto();
  o.env = &slow;
  Outcome got = Save(dir / "half-random.vmsnap", mem, o);
  ASSERT_EQ(got.chunks, kChunks);
  size_t text_compressed = 0;
  for (size_t c = 0; c < got.chunk_compressed.size(); ++c) {
    if (c % 2 == 1) {
      EXPECT_FALSE(got.chunk_compressed[c]) << "random chunk " << c << " stored compressed";
    } else {
      text_compressed += got.chunk_compressed[c];
    }
  }
  EXPECT_GE(text_compressed, kChunks / 2 * 3 / 4) << "auto left text chunks raw although the output was the bottleneck";
  EXPECT_EQ(got.compress_calls, got.compressed) << "zstd ran on chunks of random pages";
  ExpectSameMemory(dir / "half-random.vmsnap", mem);
}

// Random chunks with `text` text pages each (pages 0, 16, ... of the chunk).
Bytes MostlyRandomMemory(uint64_t chunks, uint32_t text) {
  const Bytes words = TextMemory();
  Bytes b(chunks * kChunkPages * kPage);
  uint64_t x = 0x2545f4914f6cdd1dull;
  for (uint64_t i = 0; i < b.size(); i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(&b[i], &x, 8);
  }
  for (uint64_t c = 0; c < chunks; ++c) {
    for (uint32_t t = 0; t < text; ++t) {
      std::memcpy(&b[(c * kChunkPages + t * 16) * kPage], &words[(c % 8) * kPage], kPage);
    }
  }
  return b;
}

// Auto spares zstd a chunk when fewer than 1/16 of its stored pages look
// compressible: 1 text page in 32 is under, 2 in 32 is not. The two saves
// run alike (a slow output, so auto climbs to compressing); zstd runs only
// on the chunks with two (which it then stores raw: too little saved).
TEST(AdaptiveCodec, SparesZstdOnlyChunksUnderASixteenthCompressible) {
  TempDir dir;
  SlowEnv slow(std::chrono::microseconds(4000));
  WriterOptions o = Auto();
  o.env = &slow;
  const Bytes one = MostlyRandomMemory(64, 1), two = MostlyRandomMemory(64, 2);
  const Outcome under = Save(dir / "one.vmsnap", one, o);
  const Outcome at = Save(dir / "two.vmsnap", two, o);
  ASSERT_EQ(under.chunks, 64u);
  ASSERT_EQ(at.chunks, 64u);
  EXPECT_EQ(under.compress_calls, 0u) << "zstd ran on chunks with 1 compressible page in 32";
  EXPECT_GE(at.compress_calls, 16u) << "zstd was spared chunks with 2 compressible pages in 32";
  EXPECT_EQ(at.compressed, 0u);
  ExpectSameMemory(dir / "one.vmsnap", one);
  ExpectSameMemory(dir / "two.vmsnap", two);
}

// Whatever auto chooses, the memory read back is the memory a raw save
// stores, page for page.
TEST(AdaptiveCodec, ReadsBackAsARawSaveOfTheSameMemory) {
  TempDir dir;
  const Bytes mem = TextMemory();
  WriterOptions raw;
  raw.compression = schema::Compression::NONE;
  Outcome r = Save(dir / "none.vmsnap", mem, raw);
  EXPECT_EQ(r.compressed, 0u);
  Save(dir / "auto.vmsnap", mem, Auto());
  ExpectSameMemory(dir / "none.vmsnap", mem);
  ExpectSameMemory(dir / "auto.vmsnap", mem);
}

}  // namespace
}  // namespace vmsnap
