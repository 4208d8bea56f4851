// SPDX-License-Identifier: MIT
// What every store must do, written once and run on each (rados:// and
// s3:// on the test cluster): a push and pull give back the same bytes that
// every command accepts by URL, and a second push uploads only what changed.
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

INSTANTIATE_TEST_SUITE_P(Stores, EachStore, ::testing::Values("rados", "s3"),
                         [](const ::testing::TestParamInfo<std::string>& p) { return p.param; });

}  // namespace
}  // namespace vmsnap
