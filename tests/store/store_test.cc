// SPDX-License-Identifier: MIT
// The chunk store against a real single-node Ceph cluster (ceph-cluster, a
// ctest fixture), what is particular to rados:// (each_store_test.cc has
// the round trip and deduplication every store passes): listing, garbage
// collection that keeps what is shared or young, and the faults a user meets
// (a missing or altered chunk object, a wrong pool, an unknown scheme), each
// one clear line with exit status 2; and what a push asks of the store
// (through a recording wrapper): each distinct chunk once, and every chunk
// marked again before the layout when the push ran long.
#include <map>
#include <mutex>

#include "store/chunk_store.h"
#include "tests/store/store_fixture.h"

namespace vmsnap {
namespace {

using storetest::Json;
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
class Recording final : public store::ObjectStore {
 public:
  explicit Recording(store::ObjectStore& s) : s_(s) {}
  const std::string& where() const override { return s_.where(); }
  Status Put(const std::string& name, std::span<const uint8_t> data, const std::string& mark) override {
    Log("put", name, mark);
    return s_.Put(name, data, mark);
  }
  Status Touch(const std::string& name, const std::string& mark) override { return s_.Touch(name, mark); }
  Result<bool> Ensure(const std::string& name, std::span<const uint8_t> data, const std::string& mark,
                      bool likely_new) override {
    Log("ensure", name, mark);
    return s_.Ensure(name, data, mark, likely_new);
  }
  Result<std::vector<uint8_t>> Get(const std::string& name) override { return s_.Get(name); }
  Result<std::string> Mark(const std::string& name, uint64_t* size) override { return s_.Mark(name, size); }
  Result<std::vector<std::string>> List(const std::string& prefix) override { return s_.List(prefix); }
  Result<bool> RemoveIfMark(const std::string& name, const std::string& mark) override {
    return s_.RemoveIfMark(name, mark);
  }
  Status Remove(const std::string& name) override { return s_.Remove(name); }

  struct Call {
    std::string op, name, mark;
  };
  std::vector<Call> calls;

 private:
  void Log(const std::string& op, const std::string& name, const std::string& mark) {
    std::lock_guard<std::mutex> lock(mu_);
    calls.push_back({op, name, mark});
  }
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
