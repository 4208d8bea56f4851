// SPDX-License-Identifier: MIT
// The chunk store on S3, against the test cluster's radosgw, what is
// particular to s3://vmsnap/FOLDER/NAME (each_store_test.cc has the round
// trip and deduplication every store passes): objects and ls confined to the
// folder, gc likewise, and the faults a user meets (a chunk object deleted
// or altered, wrong keys, no bucket, no gateway), each one clear line.
#include <chrono>
#include <filesystem>
#include <thread>

#include "store/store_url.h"
#include "tests/store/store_fixture.h"

namespace vmsnap {
namespace {

using storetest::Json;
using storetest::Lines;
using storetest::S3;
using storetest::WriteFile;
using testing::ReadFile;
using testing::RunResult;

// The round trip and the second push are in each_store_test.cc.
TEST_F(S3, ObjectsSitInTheUrlsFolderAndLsListsByFolder) {
  WriteSnapshot(Path("a.vmsnap"), 4096, 11);
  Json p = PushJson("a.vmsnap", Url("a"));
  // The objects sit in the URL's folder, named as on rados://.
  EXPECT_EQ(S3Chunks().size(), p["uploaded_chunks"].get<uint64_t>());
  int st = -1;
  Curl("-I", Key("vmsnap.snap.a"), &st);
  EXPECT_EQ(st, 0) << "the layout object is " << Key("vmsnap.snap.a");
  // ls: by folder, and by a name prefix within it.
  ASSERT_EQ(Run("push " + Path("a.vmsnap") + " " + Url("b")).status, 0);
  RunResult r = Run("ls " + Folder() + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  Json ls = Json::parse(r.out);
  ASSERT_EQ(ls.size(), 2u) << r.out;
  EXPECT_EQ(ls[0]["name"], "a");
  EXPECT_EQ(ls[0]["url"], Url("a"));
  EXPECT_EQ(ls[0]["file_bytes"].get<uint64_t>(), std::filesystem::file_size(Path("a.vmsnap")));
  r = Run("ls " + Url("b") + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).size(), 1u) << r.out;
}

TEST_F(S3, GcRemovesOnlyUnreferencedOldChunksOfItsFolder) {
  WriteSnapshot(Path("a.vmsnap"), 2048, 13);
  std::vector<uint64_t> local;
  for (uint64_t p = 0; p < 300; ++p) local.push_back(p);
  WriteSnapshot(Path("b.vmsnap"), 2048, 13, local);
  ASSERT_EQ(Run("push " + Path("a.vmsnap") + " " + Url("a")).status, 0);
  Json b = PushJson("b.vmsnap", Url("b"));
  ASSERT_GT(b["present_chunks"].get<uint64_t>(), 0u);
  // The same snapshot in another folder: its chunks are another store's.
  const std::string other = "s3://vmsnap/" + folder_ + "-other/a";
  ASSERT_EQ(Run("push " + Path("a.vmsnap") + " " + other).status, 0);
  const size_t before = S3Chunks().size();
  int st = -1;
  Curl("-X DELETE", Key("vmsnap.snap.a"), &st);
  ASSERT_EQ(st, 0);
  RunResult r = Run("gc " + Folder() + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  Json young = Json::parse(r.out);
  EXPECT_EQ(young["removed_chunks"].get<uint64_t>(), 0u);
  EXPECT_GT(young["young_chunks"].get<uint64_t>(), 0u);
  EXPECT_EQ(young["chunks"].get<uint64_t>(), before);
  // S3's modification times are whole seconds: gc leaves an object modified
  // within the last second (RemoveIfMark), whatever the grace.
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  r = Run("gc " + Folder() + " --grace 0 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  Json gone = Json::parse(r.out);
  EXPECT_GT(gone["removed_chunks"].get<uint64_t>(), 0u);
  EXPECT_EQ(S3Chunks().size(), before - gone["removed_chunks"].get<uint64_t>());
  r = Run("pull " + Url("b") + " -o " + Path("b2.vmsnap"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(ReadFile(Path("b2.vmsnap")), ReadFile(Path("b.vmsnap")));
  // The other folder lost nothing.
  r = Run("pull " + other + " -o " + Path("a2.vmsnap"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(ReadFile(Path("a2.vmsnap")), ReadFile(Path("a.vmsnap")));
  // gc names a store, not a snapshot.
  r = Run("gc " + Url("b"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("give " + Folder()), std::string::npos) << r.err;
}

TEST_F(S3, MissingOrAlteredChunksAreNamedByPullAndVerify) {
  ::setenv("XDG_CACHE_HOME", Path("cache").c_str(), 1);
  WriteSnapshot(Path("a.vmsnap"), 256, 14);
  ASSERT_EQ(Run("push " + Path("a.vmsnap") + " " + Url("a")).status, 0);
  const std::vector<std::string> chunks = S3Chunks();
  ASSERT_FALSE(chunks.empty());
  const std::string victim = chunks[chunks.size() / 2];
  const std::string named = "s3://vmsnap/" + folder_ + "/" + victim;

  // Altered: the gateway hands out other bytes under the chunk's name.
  WriteFile(Path("junk"), std::vector<uint8_t>(100, 0xee));
  int st = -1;
  Curl("-T " + Path("junk"), Key(victim), &st);
  ASSERT_EQ(st, 0);
  for (const std::string& cmd : {"pull " + Url("a") + " -o " + Path("out.vmsnap"), "verify " + Url("a")}) {
    RunResult r = Run(cmd);
    EXPECT_EQ(r.status, 2) << cmd;
    EXPECT_NE(r.err.find(named + ": its bytes do not match its name"), std::string::npos) << cmd << ": " << r.err;
    EXPECT_EQ(Lines(r.err), 1u) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(Path("out.vmsnap")));

  // Deleted.
  Curl("-X DELETE", Key(victim), &st);
  ASSERT_EQ(st, 0);
  for (const std::string& cmd : {"pull " + Url("a") + " -o " + Path("out.vmsnap"), "verify " + Url("a")}) {
    RunResult r = Run(cmd);
    EXPECT_EQ(r.status, 2) << cmd;
    EXPECT_NE(r.err.find(named + ": chunk of a is missing from the store"), std::string::npos) << cmd << ": " << r.err;
    EXPECT_EQ(Lines(r.err), 1u) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(Path("out.vmsnap")));
  // Nothing half-fetched was left in the cache for the next run to trust.
  size_t cached = 0;
  if (std::filesystem::exists(Path("cache"))) {
    for (const auto& e : std::filesystem::recursive_directory_iterator(Path("cache"))) cached += e.is_regular_file();
  }
  EXPECT_EQ(cached, 0u);

  // Pushing again puts back exactly the missing chunk.
  Json again = PushJson("a.vmsnap", Url("a"));
  EXPECT_EQ(again["uploaded_chunks"].get<uint64_t>(), 1u);
  RunResult r = Run("verify " + Url("a"));
  EXPECT_EQ(r.status, 0) << r.err;
  ::unsetenv("XDG_CACHE_HOME");
}

TEST_F(S3, WrongKeysBucketOrGatewayGetOneLine) {
  WriteSnapshot(Path("a.vmsnap"), 16, 15);
  const std::string push = "push " + Path("a.vmsnap") + " ";
  const std::string store = "s3://vmsnap/" + folder_;
  struct Case {
    std::string env, args, expect;
  } cases[] = {
      {"AWS_SECRET_ACCESS_KEY=wrong", push + Url("x"), store + ": list the bucket: HTTP 403 SignatureDoesNotMatch"},
      {"AWS_ACCESS_KEY_ID=nobody", push + Url("x"), store + ": list the bucket: HTTP 403 InvalidAccessKeyId"},
      {"AWS_ACCESS_KEY_ID=nobody", "pull " + Url("x") + " -o " + Path("x.vmsnap"), "HTTP 403 InvalidAccessKeyId"},
      {"AWS_ACCESS_KEY_ID=nobody", "verify " + Url("x"), "HTTP 403 InvalidAccessKeyId"},
      {"AWS_ACCESS_KEY_ID=", push + Url("x"), store + ": no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"},
      {"", push + "s3://no-such-bucket/x", "s3://no-such-bucket: no such bucket (HTTP 404 NoSuchBucket)"},
      {"", "ls s3://no-such-bucket/", "s3://no-such-bucket: no such bucket"},
      {"AWS_ENDPOINT_URL=http://127.0.0.1:1", push + Url("x"), "http://127.0.0.1:1: Couldn't connect to server"},
      {"", "pull " + Url("never-pushed") + " -o " + Path("x.vmsnap"), Url("never-pushed") + ": no such snapshot"},
      {"", push + "s3://vmsnap/" + folder_ + "/", "no snapshot name (s3://BUCKET/PREFIX/NAME)"},
      {"", push + Url("x") + " --ceph-conf /etc/ceph/ceph.conf", "--ceph-conf is for rados:// URLs"},
      {"", push + "s3://vmsnap/" + folder_ + "//x", "empty folder name in the key prefix"},
  };
  for (const Case& c : cases) {
    const std::string line = c.env + " " + c.args;
    RunResult r = RunWith(c.env, c.args);
    EXPECT_EQ(r.status, 2) << line << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << line << ": " << r.err;
    EXPECT_EQ(Lines(r.err), 1u) << line << ": " << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(Path("x.vmsnap")));
}

// gc's delete must lose to a push that marks the chunk between gc's last
// look at it and the delete itself (the store's SetBeforeRemove hook stands
// for that push): on RADOS one compare-and-delete operation, on S3 a delete
// conditional on the modification time. S3 gives that time in whole
// seconds, so an object modified within the last second is not deleted at
// all (a mark set in that same second could not be told apart).
TEST_F(S3, ADeleteLosesToAMarkSetBetweenGcsLookAndItsDelete) {
  for (const std::string& url : {Url(""), std::string("rados://vmsnap/")}) {
    SCOPED_TRACE(url);
    const bool s3 = url.rfind("s3://", 0) == 0;
    auto u = store::ParseStoreUrl(url, /*name_required=*/false);
    ASSERT_TRUE(u.ok()) << u.status().message();
    auto st = store::OpenStore(*u, "");
    ASSERT_TRUE(st.ok()) << st.status().message();
    store::ObjectStore& s = **st;
    const std::string obj = "vmsnap.chunk.mark-test-" + prefix_;
    const std::vector<uint8_t> bytes(1000, 7);
    ASSERT_TRUE(s.Put(obj, bytes, "100 old").ok());
    uint64_t size = 0;
    auto mark = s.Mark(obj, &size);
    ASSERT_TRUE(mark.ok()) << mark.status().message();
    EXPECT_EQ(*mark, "100 old");
    EXPECT_EQ(size, bytes.size());
    auto pause = [&] {
      if (s3) std::this_thread::sleep_for(std::chrono::milliseconds(2100));
    };
    if (s3) {
      auto recent = s.RemoveIfMark(obj, "100 old");
      ASSERT_TRUE(recent.ok()) << recent.status().message();
      EXPECT_FALSE(*recent) << "deleted an object modified within the last second";
      ASSERT_TRUE(s.Get(obj).ok());
      pause();
    }
    // A push relies on the chunk again, after gc compared the mark.
    int hooked = 0;
    s.SetBeforeRemove([&](const std::string& name) {
      ++hooked;
      EXPECT_TRUE(s.Touch(name, "200 new").ok());
    });
    auto removed = s.RemoveIfMark(obj, "100 old");
    s.SetBeforeRemove({});
    ASSERT_TRUE(removed.ok()) << removed.status().message();
    EXPECT_EQ(hooked, 1);
    EXPECT_FALSE(*removed) << "deleted a chunk marked after gc looked at it";
    auto still = s.Get(obj);
    ASSERT_TRUE(still.ok()) << still.status().message();
    EXPECT_EQ(*still, bytes);
    EXPECT_EQ(s.Mark(obj).value(), "200 new");
    // Marked again before gc looks: kept without a delete.
    removed = s.RemoveIfMark(obj, "100 old");
    ASSERT_TRUE(removed.ok());
    EXPECT_FALSE(*removed);
    // With the current mark it goes, and a mark on a missing object creates nothing.
    pause();
    removed = s.RemoveIfMark(obj, "200 new");
    ASSERT_TRUE(removed.ok()) << removed.status().message();
    EXPECT_TRUE(*removed);
    EXPECT_EQ(s.Get(obj).status().code(), Code::kNotFound);
    EXPECT_EQ(s.Touch(obj, "300 late").code(), Code::kNotFound);
    EXPECT_EQ(s.Get(obj).status().code(), Code::kNotFound);
  }
}

}  // namespace
}  // namespace vmsnap
