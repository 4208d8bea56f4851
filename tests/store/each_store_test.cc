// SPDX-License-Identifier: MIT
// What every store must do, written once and run on each (rados:// and
// s3:// on the test cluster): a push and pull give back the same bytes that
// every command accepts by URL, a second push uploads only what changed, and
// an incremental chain is pushed parents first and comes back whole, its
// parents checked by snapshot id.
#include <filesystem>
#include <string>

#include "tests/store/store_fixture.h"

namespace vmsnap {
namespace {

using storetest::Json;
using testing::ReadFile;
using testing::RunResult;

// S3's set-up (the gateway's endpoint and keys in the environment) is
// harmless for rados://, so one fixture serves both; the parameter picks the
// URLs.
class EachStore : public storetest::S3, public ::testing::WithParamInterface<std::string> {
 protected:
  std::string At(const std::string& name) { return GetParam() == "s3" ? S3::Url(name) : Store::Url(name); }
  // The same in a folder of names (rados://POOL/FOLDER/NAME): where a
  // chain's parents get their default names beside the child's.
  std::string InFolder(const std::string& name) {
    return GetParam() == "s3" ? S3::Url(name) : "rados://vmsnap/" + prefix_ + "/" + name;
  }
};

TEST_P(EachStore, PushThenPullGivesTheSameBytesAndEveryCommandTakesTheUrl) {
  ::setenv("XDG_CACHE_HOME", Path("cache").c_str(), 1);
  WriteSnapshot(Path("a.vmsnap"), 4096, 11);
  Json p = PushJson("a.vmsnap", At("a"));
  EXPECT_GT(p["uploaded_chunks"].get<uint64_t>(), 0u);
  EXPECT_EQ(p["present_chunks"].get<uint64_t>(), 0u);
  RunResult r = Run("pull " + At("a") + " -o " + Path("back.vmsnap"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(ReadFile(Path("back.vmsnap")), ReadFile(Path("a.vmsnap")));
  // One worker: its few buffers are each reused for several chunks.
  r = Run("pull " + At("a") + " --parallel 1 -o " + Path("back1.vmsnap"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(ReadFile(Path("back1.vmsnap")), ReadFile(Path("a.vmsnap")));
  EXPECT_EQ(Run("verify " + Path("back.vmsnap")).status, 0);
  EXPECT_EQ(Run("diff " + Path("a.vmsnap") + " " + Path("back.vmsnap")).status, 0);
  r = Run("verify " + At("a"));
  EXPECT_EQ(r.status, 0) << r.err;
  r = Run("diff " + Path("a.vmsnap") + " " + At("a"));
  EXPECT_EQ(r.status, 0) << r.err;
  r = Run("inspect " + At("a") + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  const Json remote = Json::parse(r.out);
  const Json local = Json::parse(Run("inspect " + Path("a.vmsnap") + " --json").out);
  EXPECT_EQ(remote["memory"], local["memory"]);
  EXPECT_EQ(remote["vcpus"], local["vcpus"]);
  // inspect, verify and diff share one cached copy, named by the layout's hash.
  size_t files = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(Path("cache"))) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
  r = Run("verify " + At("nothing-here"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("no such snapshot"), std::string::npos) << r.err;
  ::unsetenv("XDG_CACHE_HOME");
}

TEST_P(EachStore, ASecondPushUploadsOnlyWhatChanged) {
  WriteSnapshot(Path("a.vmsnap"), 8192, 12);
  Json a = PushJson("a.vmsnap", At("a"));
  Json again = PushJson("a.vmsnap", At("a-again"));
  EXPECT_EQ(again["uploaded_bytes"].get<uint64_t>(), 0u) << "the same snapshot twice stores nothing twice";
  EXPECT_EQ(again["present_chunks"], a["chunks"]);
  // 5 % of the pages changed in one place (the writer cuts 1 MiB chunks, and
  // a changed chunk is uploaded whole, so changes spread over every chunk
  // would upload everything).
  std::vector<uint64_t> changed;
  for (uint64_t p = 0; p < 8192 / 20; ++p) changed.push_back(p);
  WriteSnapshot(Path("c.vmsnap"), 8192, 12, changed);
  Json c = PushJson("c.vmsnap", At("c"));
  const double ratio = double(c["uploaded_bytes"].get<uint64_t>()) / double(a["uploaded_bytes"].get<uint64_t>());
  EXPECT_LE(ratio, 0.10) << "5 % of the memory changed in one place uploaded " << ratio * 100 << " %";
  EXPECT_GT(c["uploaded_chunks"].get<uint64_t>(), 0u);
  EXPECT_GT(c["present_chunks"].get<uint64_t>(), 0u);
  RunResult r = Run("pull " + At("c") + " -o " + Path("c2.vmsnap"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(ReadFile(Path("c2.vmsnap")), ReadFile(Path("c.vmsnap")));
}

TEST_P(EachStore, AChainIsPushedParentsFirstAndComesBackWholeAndAChangedParentIsRefused) {
  ::setenv("XDG_CACHE_HOME", Path("cache").c_str(), 1);
  WriteSnapshot(Path("base.vmsnap"), 1024, 21);
  WriteLayer(Path("l1.vmsnap"), Path("base.vmsnap"), 1024, 0, 3, 22);
  WriteLayer(Path("l2.vmsnap"), Path("l1.vmsnap"), 1024, 1, 5, 23);
  const std::string base = InFolder("base"), l1 = InFolder("l1"), l2 = InFolder("l2");
  const std::string folder = GetParam() == "s3" ? "" : prefix_ + "/";
  Json p = PushJson("l2.vmsnap", l2);
  EXPECT_EQ(p["parent"], folder + "l1");
  EXPECT_EQ(p["pushed_parents"], Json::array({folder + "base", folder + "l1"}));
  Json again = PushJson("l2.vmsnap", l2);
  EXPECT_EQ(again["pushed_parents"], Json::array());
  EXPECT_EQ(again["uploaded_bytes"].get<uint64_t>(), 0u);
  RunResult r = Run("ls " + (GetParam() == "s3" ? Folder() : "rados://vmsnap/" + prefix_ + "/") + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).size(), 3u) << r.out;
  EXPECT_EQ(Json::parse(r.out).back()["parent"], folder + "l1") << r.out;
  // gc reads the children's layouts too, and a parent's chunks are its own
  // layout's: everything below still reads the whole chain.
  r = Run("gc " + (GetParam() == "s3" ? Folder() : std::string("rados://vmsnap")) + " --grace 0 --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_GE(Json::parse(r.out)["snapshots"].get<uint64_t>(), 3u) << r.out;

  // Every layer comes back byte for byte, beside the leaf where its manifest looks.
  std::filesystem::create_directory(Path("out"));
  r = Run("pull " + l2 + " -o " + Path("out/l2.vmsnap"));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* f : {"l2.vmsnap", "l1.vmsnap", "base.vmsnap"}) {
    EXPECT_EQ(ReadFile(Path(std::string("out/") + f)), ReadFile(Path(f))) << f;
  }
  r = Run("pull " + l2 + " -o " + Path("out/l2.vmsnap"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("already there"), std::string::npos) << r.out;
  // The chain by URL: verify checks every layer, diff compares the merged memory.
  r = Run("verify " + l2);
  EXPECT_EQ(r.status, 0) << r.err;
  r = Run("diff " + Path("l2.vmsnap") + " " + l2);
  EXPECT_EQ(r.status, 0) << r.err << r.out;
  r = Run("diff " + Path("l1.vmsnap") + " " + l2);
  EXPECT_EQ(r.status, 1) << r.err << r.out;
  r = Run("inspect " + l2 + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out)["memory"], Json::parse(Run("inspect " + Path("l2.vmsnap") + " --json").out)["memory"]);

  // The parent's name pushed again with other content: never used under the child.
  WriteSnapshot(Path("other.vmsnap"), 1024, 99);
  ASSERT_EQ(Run("push " + Path("other.vmsnap") + " " + base).status, 0);
  for (const std::string& cmd : {"verify " + l2, "pull " + l2 + " -o " + Path("l2-again.vmsnap")}) {
    r = Run(cmd);
    EXPECT_EQ(r.status, 2) << cmd;
    EXPECT_NE(r.err.find("is not the parent of"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("pushed again with other content"), std::string::npos) << r.err;
    EXPECT_EQ(storetest::Lines(r.err), 1u) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(Path("l2-again.vmsnap")));
  r = Run("push " + Path("l1.vmsnap") + " " + l1 + "-again");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("holds another snapshot"), std::string::npos) << r.err;
  EXPECT_EQ(storetest::Lines(r.err), 1u) << r.err;
  // A parent neither in the store nor on disk.
  std::filesystem::rename(Path("base.vmsnap"), Path("base.moved"));
  r = Run("push " + Path("l1.vmsnap") + " " + l1 + "-x --parent-name base-x");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("no such snapshot, and the parent snapshot"), std::string::npos) << r.err;
  ::unsetenv("XDG_CACHE_HOME");
}

INSTANTIATE_TEST_SUITE_P(Stores, EachStore, ::testing::Values("rados", "s3"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace vmsnap
