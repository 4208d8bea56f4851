// SPDX-License-Identifier: MIT
// What the store tests share: a scratch directory per test, snapshots made
// to order, the test cluster's pool (rados://vmsnap/...) and radosgw bucket
// (s3://vmsnap/...), both from the `ceph` ctest fixture (ceph-cluster), and
// the `rados` and S3 (curl) commands a test uses to damage what it pushed.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "format/reader.h"
#include "format/writer.h"
#include "tests/cli_fixture.h"

namespace vmsnap::storetest {

using testing::CliTest;
using testing::ReadFile;
using testing::RunResult;
using Json = nlohmann::json;

inline constexpr uint64_t kPage = 4096;

inline void WriteFile(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// The output of a shell command, and its exit status.
inline std::string Shell(const std::string& cmd, int* status = nullptr) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  if (status != nullptr) *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
  return out;
}

inline size_t Lines(const std::string& s) { return size_t(std::count(s.begin(), s.end(), '\n')); }

class Store : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    if (IsSkipped()) return;
    const char* conf = std::getenv("CEPH_CONF");
    ASSERT_NE(conf, nullptr) << "CEPH_CONF must name the test cluster (the ceph fixture sets it)";
    cluster_dir_ = std::string(conf).substr(0, std::string(conf).rfind('/'));
    // Names unique to this test, so tests share the pool without meeting.
    prefix_ = std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "-" +
              std::to_string(::getpid()) + "-";
  }

  std::string Url(const std::string& name) { return "rados://vmsnap/" + prefix_ + name; }
  std::string Object(const std::string& name) { return "vmsnap.snap." + prefix_ + name; }

  // A writer of an x86-64 snapshot of one region of `pages` pages at gpa 0
  // (null, the failure recorded, if it cannot be made).
  std::unique_ptr<SnapshotWriter> CreateWriter(const std::string& path, uint64_t pages) {
    WriterOptions o;
    o.threads = 1;
    auto w = SnapshotWriter::Create(path, o);
    EXPECT_TRUE(w.ok()) << w.status().message();
    if (!w.ok()) return nullptr;
    auto m = w.value()->manifest();
    m.setArch(schema::Arch::X8664);
    auto r = m.getMemory().initRegions(1);
    r[0].setGuestPhysAddr(0);
    r[0].setSize(pages * kPage);
    return std::move(w.value());
  }

  // A full snapshot of `pages` pages: page i holds `seed`-derived bytes unless
  // i is in `changed`, which get other bytes; every 4th page is zero.
  void WriteSnapshot(const std::string& path, uint64_t pages, uint32_t seed, const std::vector<uint64_t>& changed = {}) {
    std::unique_ptr<SnapshotWriter> w = CreateWriter(path, pages);
    if (!w) return;
    std::vector<uint8_t> mem(pages * kPage);
    std::mt19937_64 rng(seed);
    for (uint64_t p = 0; p < pages; ++p) {
      if (p % 4 == 3) continue;
      for (uint64_t q = 0; q < kPage; q += 8) {
        const uint64_t v = rng();
        // Half-random pages: they compress, like real memory does.
        std::memcpy(&mem[p * kPage + q], &v, q % 16 == 0 ? 8 : 0);
      }
    }
    for (uint64_t p : changed) mem[p * kPage + 7] ^= 0x5a;
    ASSERT_TRUE(w->AddMemory(0, mem.data(), mem.size()).ok());
    auto c = w->Commit();
    ASSERT_TRUE(c.ok()) << c.message();
  }

  // An incremental snapshot on top of the snapshot file `parent` (named by
  // its file name, as `save --parent` does beside it): of `pages` pages,
  // every `every`-th one (from `first`) is defined and gets `seed`-derived bytes.
  void WriteLayer(const std::string& path, const std::string& parent, uint64_t pages, uint64_t first, uint64_t every,
                  uint32_t seed) {
    auto pr = SnapshotReader::Open(parent);
    ASSERT_TRUE(pr.ok()) << pr.status().message();
    const layout::SnapshotId pid = pr.value()->id();
    const uint32_t depth = pr.value()->manifest().hasParent() ? pr.value()->manifest().getParent().getDepth() + 1 : 1;
    std::unique_ptr<SnapshotWriter> w = CreateWriter(path, pages);
    if (!w) return;
    auto ref = w->manifest().initParent();
    ref.setSnapshotId(kj::arrayPtr(pid.data(), pid.size()));
    ref.setPath(parent.substr(parent.rfind('/') + 1).c_str());
    ref.setDepth(depth);
    std::vector<uint8_t> mem(pages * kPage), defined((pages + 7) / 8);
    std::mt19937_64 rng(seed);
    for (uint64_t p = first; p < pages; p += every) {
      defined[p / 8] |= uint8_t(1u << (p % 8));
      for (uint64_t q = 0; q < kPage; q += 16) {
        const uint64_t v = rng();
        std::memcpy(&mem[p * kPage + q], &v, 8);
      }
    }
    ASSERT_TRUE(w->AddPages(0, mem.data(), mem.size(), defined.data()).ok());
    auto c = w->Commit();
    ASSERT_TRUE(c.ok()) << c.message();
  }

  Json PushJson(const std::string& file, const std::string& url) {
    RunResult r = Run("push " + Path(file) + " " + url + " --json");
    EXPECT_EQ(r.status, 0) << r.err;
    return r.status == 0 ? Json::parse(r.out) : Json::object();
  }

  // Run() with `env` (VAR=VALUE ...) set for the command only.
  RunResult RunWith(const std::string& env, const std::string& args, int timeout_s = 120) {
    RunResult r;
    int st = 0;
    r.out = Shell("cd " + dir_ + " && env " + env + " timeout " + std::to_string(timeout_s) + " " + VMSNAP_BIN + " " +
                      args + " 2>" + Path("stderr.txt"),
                  &st);
    r.status = st;
    r.err = ReadFile(Path("stderr.txt"));
    return r;
  }

  // `rados` on the test pool; returns its exit status.
  int Rados(const std::string& args) { return std::system(("rados -p vmsnap " + args + " >/dev/null 2>&1").c_str()); }

  // The chunk objects in the test pool.
  std::vector<std::string> RadosChunks() {
    std::vector<std::string> out;
    std::istringstream in(Shell("rados -p vmsnap ls 2>/dev/null | grep '^vmsnap.chunk.' | sort"));
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }

  // ceph-cluster's subcommands (kill-osd, start-osd) on the test cluster.
  int Cluster(const std::string& cmd) {
    return std::system((std::string(VMSNAP_CEPH_CLUSTER) + " " + cmd + " " + cluster_dir_ + " >/dev/null 2>&1").c_str());
  }

  std::string cluster_dir_, prefix_;
};

// The same on radosgw: the endpoint and keys ceph-cluster wrote to s3.env
// go into this process's environment (and so every vmsnap it runs), and
// each test keeps its objects in a folder of its own in bucket `vmsnap`.
class S3 : public Store {
 protected:
  void SetUp() override {
    Store::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    std::ifstream env(cluster_dir_ + "/s3.env");
    ASSERT_TRUE(env.good()) << cluster_dir_ << "/s3.env: the ceph fixture did not start radosgw";
    for (std::string line; std::getline(env, line);) {
      const size_t eq = line.find('=');
      if (eq == std::string::npos) continue;
      ::setenv(line.substr(0, eq).c_str(), line.substr(eq + 1).c_str(), 1);
      env_.push_back(line.substr(0, eq));
    }
    folder_ = prefix_.substr(0, prefix_.size() - 1);
  }
  void TearDown() override {
    for (const std::string& name : env_) ::unsetenv(name.c_str());
    Store::TearDown();
  }

  std::string Url(const std::string& name) { return "s3://vmsnap/" + folder_ + "/" + name; }
  std::string Folder() { return "s3://vmsnap/" + folder_ + "/"; }
  // An object's path for Curl.
  std::string Key(const std::string& object) { return "/" + folder_ + "/" + object; }

  // curl with the test user's keys, signed by curl's AWS SigV4 as vmsnap's
  // requests are; `path` follows the bucket's name.
  std::string Curl(const std::string& args, const std::string& path, int* status = nullptr) {
    const std::string cmd = std::string("curl -s -f --aws-sigv4 aws:amz:us-east-1:s3 --user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\" "
                                        "-H x-amz-content-sha256:UNSIGNED-PAYLOAD ") +
                            args + " \"$AWS_ENDPOINT_URL/vmsnap" + path + "\"";
    return Shell(cmd, status);
  }
  // The chunk objects in the test's folder (names without the folder).
  std::vector<std::string> S3Chunks() {
    const std::string xml = Curl("", "?list-type=2&prefix=" + folder_ + "%2Fvmsnap.chunk.");
    EXPECT_NE(xml.find("<IsTruncated>false</IsTruncated>"), std::string::npos) << xml;
    std::vector<std::string> out;
    const std::regex key("<Key>" + folder_ + "/(vmsnap\\.chunk\\.[0-9a-f]+)</Key>");
    for (auto it = std::sregex_iterator(xml.begin(), xml.end(), key); it != std::sregex_iterator(); ++it) {
      out.push_back((*it)[1]);
    }
    return out;
  }

  std::string folder_;
  std::vector<std::string> env_;
};

}  // namespace vmsnap::storetest
