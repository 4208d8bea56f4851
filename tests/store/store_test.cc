// SPDX-License-Identifier: MIT
// The chunk store against a real single-node Ceph cluster (ceph-cluster, a
// ctest fixture), what is particular to rados:// (each_store_test.cc has
// the round trip and deduplication every store passes): listing, garbage
// collection that keeps what is shared or young, and the faults a user meets
// (a missing or altered chunk object, a layout whose copy of the footer or
// manifest does not verify, a wrong pool, an unknown scheme), each one clear
// line with exit status 2; and what a push asks of the store
// (through a recording wrapper): each distinct chunk once, chunks settled
// right whatever the guess of which are new, and every chunk marked again
// before the layout when the push ran long; and the lazy cache's limit and
// chain folders.
#include <xxhash.h>
#include <zstd.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>

#include "format/chain.h"
#include "format/layout.h"
#include "store/chain_links.h"
#include "store/lazy_cache.h"
#include "store/pull.h"
#include "store/push.h"
#include "store/store_url.h"
#include "tests/store/store_fixture.h"

namespace vmsnap {
namespace {

using storetest::Json;
using storetest::Lines;
using storetest::Store;
using storetest::WriteFile;
using testing::ReadFile;
using testing::RunResult;

// The round trip and the second push are in each_store_test.cc.
TEST_F(Store, LsListsAPushedSnapshotWithItsSize) {
  WriteSnapshot(Path("a.vmsnap"), 4096, 1);
  ASSERT_EQ(Run("push " + Path("a.vmsnap") + " " + Url("a")).status, 0);
  RunResult r = Run("ls rados://vmsnap/" + prefix_ + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  Json ls = Json::parse(r.out);
  ASSERT_EQ(ls.size(), 1u);
  EXPECT_EQ(ls[0]["name"], prefix_ + "a");
  EXPECT_EQ(ls[0]["file_bytes"].get<uint64_t>(), std::filesystem::file_size(Path("a.vmsnap")));
}

TEST_F(Store, MissingOrAlteredChunksAreNamedAndNothingIsWritten) {
  WriteSnapshot(Path("a.vmsnap"), 1024, 3);
  ASSERT_EQ(Run("push " + Path("a.vmsnap") + " " + Url("a")).status, 0);
  // Find one of its chunk objects from the store's listing.
  FILE* p = ::popen("rados -p vmsnap ls 2>/dev/null | grep '^vmsnap.chunk.' | sort", "r");
  ASSERT_NE(p, nullptr);
  char line[256];
  std::vector<std::string> chunks;
  while (std::fgets(line, sizeof line, p)) chunks.emplace_back(std::string(line, std::strlen(line) - 1));
  ::pclose(p);
  ASSERT_FALSE(chunks.empty());
  // Which chunks belong to a: pull through a snapshot whose chunks are ours only.
  WriteSnapshot(Path("solo.vmsnap"), 64, 77);
  Json solo = PushJson("solo.vmsnap", Url("solo"));
  ASSERT_EQ(solo["uploaded_chunks"].get<uint64_t>(), solo["chunks"].get<uint64_t>());
  FILE* q = ::popen("rados -p vmsnap ls 2>/dev/null | grep '^vmsnap.chunk.' | sort", "r");
  std::vector<std::string> after;
  while (std::fgets(line, sizeof line, q)) after.emplace_back(std::string(line, std::strlen(line) - 1));
  ::pclose(q);
  std::string victim;
  for (const auto& c : after) {
    if (std::find(chunks.begin(), chunks.end(), c) == chunks.end()) victim = c;
  }
  ASSERT_FALSE(victim.empty());

  // Altered: its bytes no longer match its name.
  WriteFile(Path("junk"), std::vector<uint8_t>(100, 0xee));
  ASSERT_EQ(Rados("put " + victim + " " + Path("junk")), 0);
  RunResult r = Run("pull " + Url("solo") + " -o " + Path("out.vmsnap"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find(victim), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("altered"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(Path("out.vmsnap")));

  // Missing.
  ASSERT_EQ(Rados("rm " + victim), 0);
  r = Run("pull " + Url("solo") + " -o " + Path("out.vmsnap"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find(victim + ": chunk of " + prefix_ + "solo is missing"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(Path("out.vmsnap")));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;

  // A push again repairs it: only the missing chunk goes up.
  Json again = PushJson("solo.vmsnap", Url("solo"));
  EXPECT_EQ(again["uploaded_chunks"].get<uint64_t>(), 1u);
  r = Run("pull " + Url("solo") + " -o " + Path("out.vmsnap"));
  EXPECT_EQ(r.status, 0) << r.err;
}

// A layout object carries the file's header, manifest and footer among its
// gap bytes. One whose footer does not verify, or whose manifest does not
// match the footer's checksum, is refused as the file itself would be, and
// nothing is written.
TEST_F(Store, ALayoutWhoseFooterOrManifestDoesNotVerifyIsRefused) {
  WriteSnapshot(Path("s.vmsnap"), 256, 71);
  ASSERT_EQ(Run("push " + Path("s.vmsnap") + " " + Url("s")).status, 0);
  ASSERT_EQ(Rados("get " + Object("s") + " " + Path("layout.bin")), 0);
  const std::string text = ReadFile(Path("layout.bin"));
  const std::vector<uint8_t> raw(text.begin(), text.end());
  // The layout's own encoding (docs/store.md): a full snapshot's is version 1.
  ASSERT_GT(raw.size(), 48u);
  ASSERT_EQ(layout::GetLe32(raw.data() + 8), 1u);
  const uint64_t n = layout::GetLe32(raw.data() + 12), gaps_raw = layout::GetLe64(raw.data() + 24),
                 gaps_stored = layout::GetLe64(raw.data() + 32), entries_end = 40 + n * 48;
  std::vector<uint8_t> gaps(gaps_raw);
  ASSERT_EQ(ZSTD_decompress(gaps.data(), gaps.size(), raw.data() + entries_end, gaps_stored), gaps_raw);
  // The gap byte of a file offset: the chunks before it take no gap bytes.
  auto gap_at = [&](uint64_t off) {
    uint64_t in_chunks = 0;
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t at = layout::GetLe64(raw.data() + 40 + i * 48), len = layout::GetLe64(raw.data() + 48 + i * 48);
      if (at < off) in_chunks += len;
    }
    return off - in_chunks;
  };
  const uint64_t footer = gaps_raw - layout::kFooterSize;
  const uint64_t manifest = gap_at(layout::GetLe64(gaps.data() + footer + layout::kFooterManifestOffset));
  struct Case {
    uint64_t gap_byte;
    const char* want;
  } cases[] = {{footer + layout::kFooterChecksumOffset, "checksum mismatch"},
               {manifest + 8, "the manifest does not match the footer's checksum"}};
  for (const Case& c : cases) {
    std::vector<uint8_t> bad = gaps;
    bad[c.gap_byte] ^= 1;
    std::vector<uint8_t> out(raw.begin(), raw.begin() + long(entries_end));
    out.resize(entries_end + ZSTD_compressBound(bad.size()));
    const size_t z = ZSTD_compress(out.data() + entries_end, out.size() - entries_end, bad.data(), bad.size(), 3);
    ASSERT_FALSE(ZSTD_isError(z));
    out.resize(entries_end + z);
    layout::PutLe64(out.data() + 32, z);
    out.resize(out.size() + 8);
    layout::PutLe64(out.data() + out.size() - 8, XXH3_64bits(out.data(), out.size() - 8));
    WriteFile(Path("forged.bin"), out);
    ASSERT_EQ(Rados("put " + Object("s") + " " + Path("forged.bin")), 0);
    RunResult r = Run("pull " + Url("s") + " -o out.vmsnap");
    EXPECT_EQ(r.status, 2) << c.want;
    EXPECT_NE(r.err.find(c.want), std::string::npos) << r.err;
    EXPECT_EQ(Lines(r.err), 1u) << r.err;
    EXPECT_FALSE(std::filesystem::exists(Path("out.vmsnap"))) << c.want;
  }
}

TEST_F(Store, BadUrlsAndPoolsGetOneLine) {
  WriteSnapshot(Path("a.vmsnap"), 16, 4);
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"push " + Path("a.vmsnap") + " rados://no-such-pool/x", "rados://no-such-pool: no such pool"},
      {"push " + Path("a.vmsnap") + " rados://vmsnap", "no snapshot name"},
      {"push " + Path("a.vmsnap") + " s3:///x", "s3:///x: no bucket"},
      {"push " + Path("a.vmsnap") + " ftp://x/y", "unknown store scheme"},
      {"pull rados://vmsnap/" + prefix_ + "never-pushed -o " + Path("x.vmsnap"), "no such snapshot"},
      {"push " + Path("missing.vmsnap") + " " + Url("m"), "missing.vmsnap"},
      {"gc rados://vmsnap/some-prefix", "gc works on a whole store"},
  };
  for (const Case& c : cases) {
    RunResult r = Run(c.args);
    EXPECT_EQ(r.status, 2) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.args << ": " << r.err;
  }
}

TEST_F(Store, GcRemovesOnlyUnreferencedOldChunks) {
  WriteSnapshot(Path("a.vmsnap"), 2048, 5);
  std::vector<uint64_t> local;
  for (uint64_t p = 0; p < 300; ++p) local.push_back(p);
  WriteSnapshot(Path("b.vmsnap"), 2048, 5, local);
  ASSERT_EQ(Run("push " + Path("a.vmsnap") + " " + Url("a")).status, 0);
  Json b = PushJson("b.vmsnap", Url("b"));
  ASSERT_GT(b["present_chunks"].get<uint64_t>(), 0u);
  // Drop a; its chunks that b shares must stay, the others go.
  ASSERT_EQ(Rados("rm " + Object("a")), 0);
  // Within the grace period nothing goes: a push may still rely on them.
  RunResult r = Run("gc rados://vmsnap --json");
  ASSERT_EQ(r.status, 0) << r.err;
  Json young = Json::parse(r.out);
  EXPECT_EQ(young["removed_chunks"].get<uint64_t>(), 0u);
  EXPECT_GT(young["young_chunks"].get<uint64_t>(), 0u);
  r = Run("gc rados://vmsnap --grace 0 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  Json gone = Json::parse(r.out);
  EXPECT_GT(gone["removed_chunks"].get<uint64_t>(), 0u);
  // b is whole.
  r = Run("pull " + Url("b") + " -o " + Path("b2.vmsnap"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(ReadFile(Path("b2.vmsnap")), ReadFile(Path("b.vmsnap")));
  // A chunk gc examined but a push marked again in between is kept: the
  // delete compares the mark in the same step. Pushing a again re-marks and
  // re-uploads only what gc removed.
  Json a2 = PushJson("a.vmsnap", Url("a"));
  EXPECT_GT(a2["uploaded_chunks"].get<uint64_t>(), 0u);
  EXPECT_LE(a2["uploaded_chunks"].get<uint64_t>(), gone["removed_chunks"].get<uint64_t>());
}

// The store a push talks to, with every Ensure and Put it asks for recorded
// in order (name and mark).
class Recording final : public store::ForwardingStore {
 public:
  explicit Recording(store::ObjectStore& s) : s_(s) {}
  const std::string& where() const override { return s_.where(); }
  Status Put(const std::string& name, std::span<const uint8_t> data, const std::string& mark) override {
    Log("put", name, mark);
    return s_.Put(name, data, mark);
  }
  Result<bool> Ensure(const std::string& name, std::span<const uint8_t> data, const std::string& mark,
                      bool likely_new) override {
    Result<bool> wrote = s_.Ensure(name, data, mark, likely_new);
    Log("ensure", name, mark, likely_new, wrote.ok() && *wrote);
    return wrote;
  }

  struct Call {
    std::string op, name, mark;
    bool guessed_new = false, wrote = false;  // an ensure's likely_new, and what it did
  };
  std::vector<Call> calls;

 private:
  void Log(const std::string& op, const std::string& name, const std::string& mark, bool guessed_new = false,
           bool wrote = false) {
    std::lock_guard<std::mutex> lock(mu_);
    calls.push_back({op, name, mark, guessed_new, wrote});
  }
  Result<store::ObjectStore*> Target() override { return &s_; }
  store::ObjectStore& s_;
  std::mutex mu_;
};

class StorePush : public Store {
 protected:
  void SetUp() override {
    Store::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    auto u = store::ParseStoreUrl("rados://vmsnap", /*name_required=*/false);
    ASSERT_TRUE(u.ok());
    auto st = store::OpenStore(*u, "");
    ASSERT_TRUE(st.ok()) << st.status().message();
    store_ = std::move(st).value();
  }
  std::unique_ptr<store::ObjectStore> store_;
};

// Eight chunks with the same bytes (and their neighbours' pages) are one
// object: the first worker to claim it settles it, the others only count.
TEST_F(StorePush, ChunksWithTheSameBytesAreSettledOnce) {
  constexpr uint64_t kChunkPages = 256;  // the writer's 1 MiB chunks
  WriterOptions o;
  o.threads = 1;
  auto w = SnapshotWriter::Create(Path("dup.vmsnap"), o);
  ASSERT_TRUE(w.ok());
  auto m = w.value()->manifest();
  m.setArch(schema::Arch::X8664);
  auto r = m.getMemory().initRegions(1);
  r[0].setGuestPhysAddr(0);
  r[0].setSize(8 * kChunkPages * storetest::kPage);
  std::vector<uint8_t> mem(8 * kChunkPages * storetest::kPage);
  std::mt19937_64 rng(31 + ::getpid());
  for (uint64_t q = 0; q < kChunkPages * storetest::kPage; q += 8) {
    const uint64_t v = rng();
    std::memcpy(&mem[q], &v, 8);
  }
  for (int c = 1; c < 8; ++c) {
    std::memcpy(&mem[c * kChunkPages * storetest::kPage], mem.data(), kChunkPages * storetest::kPage);
  }
  ASSERT_TRUE(w.value()->AddMemory(0, mem.data(), mem.size()).ok());
  ASSERT_TRUE(w.value()->Commit().ok());
  Recording rec(*store_);
  store::PushOptions po;
  po.parallel = 8;
  auto st = store::Push(Path("dup.vmsnap"), rec, prefix_ + "dup", po);
  ASSERT_TRUE(st.ok()) << st.status().message();
  EXPECT_EQ(st->chunks, 1u);
  EXPECT_EQ(st->uploaded_chunks + st->present_chunks, 1u);
  size_t ensures = 0;
  for (const auto& c : rec.calls) ensures += c.op == "ensure";
  EXPECT_EQ(ensures, 1u) << "a chunk of the same bytes was settled more than once";
}

// Push guesses from the last chunk's outcome whether the next one is new
// (on RADOS a right guess is one operation). Chunks that alternate between
// present and new make every guess wrong: each chunk must still be settled
// once, counted right, marked by this push, and come back as it was.
TEST_F(StorePush, WrongGuessesOfNewChunksStillStoreEachChunkOnceAndRight) {
  constexpr uint64_t kChunkPages = 256;  // the writer's 1 MiB chunks
  WriteSnapshot(Path("a.vmsnap"), 8 * kChunkPages, 51);
  // b: chunks 1, 3, 5 and 7 changed, the others as in a.
  WriteSnapshot(Path("b.vmsnap"), 8 * kChunkPages, 51, {1 * kChunkPages, 3 * kChunkPages, 5 * kChunkPages, 7 * kChunkPages});
  store::PushOptions po;
  po.parallel = 1;  // in file order, each guess from the chunk before
  auto a = store::Push(Path("a.vmsnap"), *store_, prefix_ + "a", po);
  ASSERT_TRUE(a.ok()) << a.status().message();
  ASSERT_EQ(a->chunks, 8u);
  Recording rec(*store_);
  auto b = store::Push(Path("b.vmsnap"), rec, prefix_ + "b", po);
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ(b->chunks, 8u);
  EXPECT_EQ(b->uploaded_chunks, 4u);
  EXPECT_EQ(b->present_chunks, 4u);
  std::set<std::string> settled;
  size_t wrong = 0;
  std::string mark;
  for (const auto& c : rec.calls) {
    if (c.op != "ensure") continue;
    EXPECT_TRUE(settled.insert(c.name).second) << c.name << " settled twice";
    wrong += c.guessed_new != c.wrote;
    mark = c.mark;
  }
  EXPECT_EQ(settled.size(), 8u);
  EXPECT_EQ(wrong, 8u) << "the test meant every guess to be wrong";
  for (const std::string& name : settled) {
    auto now = store_->Mark(name);
    ASSERT_TRUE(now.ok()) << name << ": " << now.status().message();
    EXPECT_EQ(*now, mark) << name << " is not marked by the push that relies on it";
  }
  auto pulled = store::Pull(*store_, prefix_ + "b", Path("b.pulled"), 4, nullptr);
  ASSERT_TRUE(pulled.ok()) << pulled.status().message();
  EXPECT_EQ(ReadFile(Path("b.pulled")), ReadFile(Path("b.vmsnap")));
}

// The lazy cache's limit is for a chain as a whole, and its chain folders
// go with the files they link: a chain whose layers each fit but not
// together is used without being kept, and leaves nothing behind once open;
// a kept chain's files and folder go when another snapshot needs the room,
// while a chain already open goes on reading.
TEST_F(StorePush, ALazyCacheKeepsAChainOnlyWholeAndDropsTheLinksOfWhatItRemoves) {
  namespace fs = std::filesystem;
  constexpr uint64_t kPages = 1024;
  WriteSnapshot(Path("base.vmsnap"), kPages, 61);
  WriteLayer(Path("top.vmsnap"), Path("base.vmsnap"), kPages, 0, 8, 62);
  WriteSnapshot(Path("other.vmsnap"), kPages, 63);
  store::PushOptions po;
  po.parent_name = prefix_ + "base";
  auto pushed = store::Push(Path("top.vmsnap"), *store_, prefix_ + "top", po);
  ASSERT_TRUE(pushed.ok()) << pushed.status().message();
  po.parent_name.clear();
  pushed = store::Push(Path("other.vmsnap"), *store_, prefix_ + "other", po);
  ASSERT_TRUE(pushed.ok()) << pushed.status().message();
  auto local = SnapshotChain::Open(Path("top.vmsnap"));
  ASSERT_TRUE(local.ok()) << local.status().message();
  std::vector<uint8_t> want(kPages * storetest::kPage), got(want.size());
  ASSERT_TRUE(local->ReadMemory(0, want.size(), want.data()).ok());

  auto open = [&](const std::string& name, const std::string& dir, uint64_t max) {
    auto u = store::ParseStoreUrl("rados://vmsnap", /*name_required=*/false);
    EXPECT_TRUE(u.ok());
    auto st = store::OpenStore(*u, "");
    EXPECT_TRUE(st.ok()) << st.status().message();
    store::LazyCacheOptions o;
    o.dir = Path(dir);
    o.max_bytes = max;
    return store::LazyChain::Open(std::move(st).value(), prefix_ + name, o);
  };
  auto chains_in = [&](const std::string& dir) {
    size_t n = 0;
    std::error_code ec;
    for (fs::directory_iterator it(Path(dir) + "/chains", ec), end; !ec && it != end; it.increment(ec)) ++n;
    return n;
  };
  auto bytes_in = [&](const std::string& dir) {
    uint64_t n = 0;
    for (const auto& e : fs::directory_iterator(Path(dir))) n += e.is_regular_file() ? e.file_size() : 0;
    return n;
  };
  const uint64_t base_bytes = fs::file_size(Path("base.vmsnap")), top_bytes = fs::file_size(Path("top.vmsnap"));

  {
    // Room for either layer (the file and a byte per chunk), not both.
    const uint64_t limit = std::max(base_bytes, top_bytes) + 64;
    ASSERT_LT(limit, base_bytes + top_bytes);
    auto c = open("top", "tight", limit);
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_FALSE((*c)->kept()) << "a chain larger than the cache's limit was kept";
    ASSERT_TRUE((*c)->FetchAll().ok());
    auto opened = SnapshotChain::Open((*c)->path());
    ASSERT_TRUE(opened.ok()) << opened.status().message();
    (*c)->Discard();
    ASSERT_TRUE(opened->ReadMemory(0, got.size(), got.data()).ok());
    EXPECT_TRUE(got == want) << "the chain read other memory than its files hold";
    EXPECT_LE(bytes_in("tight"), limit);
    EXPECT_EQ(chains_in("tight"), 0u) << "the links of a chain made for one load stayed";
  }
  {
    // Room for both, and little more: both are kept (the file the first
    // one has made is not counted twice when the second is made).
    auto c = open("top", "exact", base_bytes + top_bytes + 64);
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_TRUE((*c)->kept()) << "a chain within the cache's limit was not kept whole";
  }
  {
    auto c = open("top", "cache", 1ull << 30);
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_TRUE((*c)->kept());
    ASSERT_TRUE((*c)->FetchAll().ok());
    auto opened = SnapshotChain::Open((*c)->path());
    ASSERT_TRUE(opened.ok()) << opened.status().message();
    (*c)->Discard();
    EXPECT_EQ(chains_in("cache"), 1u);
    // Room for `other` alone: both layers of the chain go, and its folder.
    auto o = open("other", "cache", fs::file_size(Path("other.vmsnap")) + 64);
    ASSERT_TRUE(o.ok()) << o.status().message();
    EXPECT_TRUE((*o)->kept());
    EXPECT_EQ(chains_in("cache"), 0u) << "the links to removed files stayed";
    ASSERT_TRUE(opened->ReadMemory(0, got.size(), got.data()).ok());
    EXPECT_TRUE(got == want) << "a chain open before its files were removed read other memory";
  }
  {
    // A chain that could not fit even in an empty cache is loaded unkept
    // and evicts nothing: what the cache held stays.
    auto o = open("other", "full", fs::file_size(Path("other.vmsnap")) + 64);
    ASSERT_TRUE(o.ok()) << o.status().message();
    ASSERT_TRUE((*o)->kept());
    ASSERT_TRUE((*o)->FetchAll().ok());
    (*o)->Discard();
    const uint64_t before = bytes_in("full");
    auto c = open("top", "full", fs::file_size(Path("other.vmsnap")) + 64);
    ASSERT_TRUE(c.ok()) << c.status().message();
    EXPECT_FALSE((*c)->kept());
    (*c)->Discard();
    EXPECT_EQ(bytes_in("full"), before) << "a chain too large for the cache emptied it";
  }
  {
    // A folder its load still holds (the chain not yet open through it)
    // stays, even when its files go; once let go, it goes too.
    auto c = open("top", "held", 1ull << 30);
    ASSERT_TRUE(c.ok()) << c.status().message();
    auto o = open("other", "held", fs::file_size(Path("other.vmsnap")) + 64);
    ASSERT_TRUE(o.ok()) << o.status().message();
    EXPECT_EQ(chains_in("held"), 1u) << "a chain folder in use was removed";
    (*c)->Discard();
    store::RemoveDeadChains(Path("held"));
    EXPECT_EQ(chains_in("held"), 0u);
  }
}

// A push that took longer than remark_after_s marks every chunk again, with
// a new mark, before it writes the layout: gc's grace then counts from the
// end of the push, not its start.
TEST_F(StorePush, ALongPushMarksEveryChunkAgainBeforeItsLayout) {
  WriteSnapshot(Path("long.vmsnap"), 2048, 41);
  Recording rec(*store_);
  store::PushOptions po;
  po.remark_after_s = 0;  // every push is "long"
  auto st = store::Push(Path("long.vmsnap"), rec, prefix_ + "long", po);
  ASSERT_TRUE(st.ok()) << st.status().message();
  std::map<std::string, std::vector<std::string>> marks;
  size_t layout_at = SIZE_MAX;
  for (size_t i = 0; i < rec.calls.size(); ++i) {
    const auto& c = rec.calls[i];
    if (c.op == "ensure") {
      EXPECT_EQ(layout_at, SIZE_MAX) << c.name << " settled after the layout was written";
      marks[c.name].push_back(c.mark);
    }
    if (c.op == "put" && c.name == Object("long")) layout_at = i;
  }
  ASSERT_NE(layout_at, SIZE_MAX);
  EXPECT_EQ(marks.size(), st->chunks);
  for (const auto& [name, ms] : marks) {
    ASSERT_EQ(ms.size(), 2u) << name;
    EXPECT_NE(ms[0], ms[1]) << name;
    auto now = store_->Mark(name);
    ASSERT_TRUE(now.ok()) << now.status().message();
    EXPECT_EQ(*now, ms[1]) << name << " keeps the mark from the start of the push";
  }
}

}  // namespace
}  // namespace vmsnap
