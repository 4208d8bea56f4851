// SPDX-License-Identifier: MIT
// The chunk store when the cluster fails under it: the OSD killed in the
// middle of a push (the push fails with one line, no snapshot appears, and
// a rerun once the OSD is back uploads only what is missing), a chunk
// object deleted or altered (verify names it), and a wrong pool or identity;
// the OSD killed under a push through S3 likewise.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <functional>
#include <thread>

#include "tests/store/store_fixture.h"

namespace vmsnap {
namespace {

using storetest::Json;
using storetest::Lines;
using storetest::Shell;
using storetest::Store;
using storetest::WriteFile;
using testing::ReadFile;
using testing::RunResult;

// A fixture over `Base` (RADOS or S3) whose tests may kill the OSD: the
// next test finds it running, whatever happened.
template <typename Base>
class OsdFaults : public Base {
 protected:
  void TearDown() override {
    if (osd_killed_) this->Cluster("start-osd");
    Base::TearDown();
  }

  struct KilledPush {
    size_t landed = 0;  // chunks in the store when the OSD died
    int status = -1;
    double took = 0;    // seconds from the OSD's death to the push's end
    std::string err;
  };
  // Freezes `push` once its first chunks are in the store (`chunks_now`
  // counts them), kills the OSD, lets the push go on and waits for it: it
  // is certainly in the middle. (The push runs freely until then: freezing
  // it while it connects to the cluster can stall its handshake.)
  void KillOsdUnder(pid_t push, const std::function<size_t()>& chunks_now, KilledPush& out) {
    for (int i = 0; i < 2000 && out.landed == 0; ++i) {
      out.landed = chunks_now();
      if (out.landed > 0) {
        ASSERT_EQ(::kill(push, SIGSTOP), 0);
        out.landed = chunks_now();
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    ASSERT_GT(out.landed, 0u) << "no chunk of the push ever landed: " << ReadFile(this->Path("push.err"));
    ASSERT_LT(out.landed, 60u) << "the push was nearly done before it could be stopped";
    ASSERT_EQ(this->Cluster("kill-osd"), 0);
    osd_killed_ = true;
    ::kill(push, SIGCONT);
    const auto t0 = std::chrono::steady_clock::now();
    out.status = this->Wait(push, std::chrono::seconds(60));
    out.took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    out.err = ReadFile(this->Path("push.err"));
  }
  void StartOsd() {
    ASSERT_EQ(this->Cluster("start-osd"), 0);
    osd_killed_ = false;
  }

  bool osd_killed_ = false;
};

using StoreFaults = OsdFaults<Store>;

TEST_F(StoreFaults, OsdKilledDuringAPushThenARerunUploadsOnlyWhatIsMissing) {
  // 64 MiB: 64 chunks, none of them in the pool yet even when the test runs
  // again on the same cluster (it counts the chunks that land).
  WriteSnapshot(Path("a.vmsnap"), 16384, uint32_t(::getpid()) * 2654435761u + uint32_t(std::time(nullptr)));
  const size_t before = RadosChunks().size();
  // One object at a time, and an OSD that does not answer fails an
  // operation after 5 s rather than the default 30.
  const pid_t push = Spawn({"push", Path("a.vmsnap"), Url("a"), "--parallel", "1"}, Path("push.err"),
                          {"CEPH_ARGS=--rados_osd_op_timeout=5"});
  KilledPush k;
  ASSERT_NO_FATAL_FAILURE(KillOsdUnder(push, [&] { return RadosChunks().size() - before; }, k));
  const size_t landed = k.landed;
  EXPECT_EQ(k.status, 2) << k.err;
  EXPECT_EQ(Lines(k.err), 1u) << k.err;
  EXPECT_NE(k.err.find("rados://vmsnap/vmsnap.chunk."), std::string::npos) << k.err;
  EXPECT_NE(k.err.find("the cluster did not answer in time"), std::string::npos) << k.err;
  EXPECT_LT(k.took, 30.0) << "the push hung on the dead OSD";

  ASSERT_NO_FATAL_FAILURE(StartOsd());
  // No snapshot: the layout object is written only after every chunk.
  EXPECT_NE(Rados("stat " + Object("a")), 0);
  RunResult r = Run("ls rados://vmsnap/" + prefix_ + " --json");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out).size(), 0u) << r.out;
  r = Run("pull " + Url("a") + " -o " + Path("back.vmsnap"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("no such snapshot"), std::string::npos) << r.err;

  // The rerun finds what landed and uploads the rest.
  Json again = PushJson("a.vmsnap", Url("a"));
  EXPECT_GE(again["present_chunks"].get<uint64_t>(), landed);
  EXPECT_EQ(again["present_chunks"].get<uint64_t>() + again["uploaded_chunks"].get<uint64_t>(),
            again["chunks"].get<uint64_t>());
  EXPECT_GT(again["uploaded_chunks"].get<uint64_t>(), 0u);
  r = Run("pull " + Url("a") + " -o " + Path("back.vmsnap"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(ReadFile(Path("back.vmsnap")), ReadFile(Path("a.vmsnap")));
}

// The same through radosgw, which itself waits without limit for an OSD
// that is gone: the push's own no-progress limit (VMSNAP_S3_TIMEOUT, 3 s
// here) ends it with one line, and a rerun completes it.
using S3Faults = OsdFaults<storetest::S3>;

TEST_F(S3Faults, OsdKilledDuringAPushFailsWithinTheS3TimeoutThenARerunCompletes) {
  WriteSnapshot(Path("a.vmsnap"), 16384, uint32_t(::getpid()) * 2246822519u + uint32_t(std::time(nullptr)));
  const pid_t push = Spawn({"push", Path("a.vmsnap"), Url("a"), "--parallel", "1"}, Path("push.err"),
                          {"VMSNAP_S3_TIMEOUT=3"});
  KilledPush k;
  ASSERT_NO_FATAL_FAILURE(KillOsdUnder(push, [&] { return S3Chunks().size(); }, k));
  const size_t landed = k.landed;
  EXPECT_EQ(k.status, 2) << k.err;
  EXPECT_EQ(Lines(k.err), 1u) << k.err;
  EXPECT_NE(k.err.find(Url("vmsnap.chunk.")), std::string::npos) << k.err;
  EXPECT_NE(k.err.find("did not answer within 3 s"), std::string::npos) << k.err;
  EXPECT_LT(k.took, 20.0) << "the push hung on the dead OSD";

  ASSERT_NO_FATAL_FAILURE(StartOsd());
  // No snapshot, and the rerun uploads only what is missing.
  int st = -1;
  Curl("-I", Key("vmsnap.snap.a"), &st);
  EXPECT_NE(st, 0) << "a layout object appeared for a push that failed";
  Json again = PushJson("a.vmsnap", Url("a"));
  EXPECT_GE(again["present_chunks"].get<uint64_t>(), landed);
  EXPECT_EQ(again["present_chunks"].get<uint64_t>() + again["uploaded_chunks"].get<uint64_t>(),
            again["chunks"].get<uint64_t>());
  RunResult r = Run("pull " + Url("a") + " -o " + Path("back.vmsnap"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(ReadFile(Path("back.vmsnap")), ReadFile(Path("a.vmsnap")));
}

TEST_F(StoreFaults, VerifyNamesADeletedOrAlteredChunk) {
  ::setenv("XDG_CACHE_HOME", Path("cache").c_str(), 1);
  const std::vector<std::string> before = RadosChunks();
  WriteSnapshot(Path("a.vmsnap"), 128, 22);
  Json p = PushJson("a.vmsnap", Url("a"));
  ASSERT_EQ(p["uploaded_chunks"], p["chunks"]);
  std::string victim;
  for (const std::string& c : RadosChunks()) {
    if (std::find(before.begin(), before.end(), c) == before.end()) victim = c;
  }
  ASSERT_FALSE(victim.empty());
  // Altered: same size, one byte changed, so only the hash can tell.
  ASSERT_EQ(Rados("get " + victim + " " + Path("chunk")), 0);
  std::string bytes = ReadFile(Path("chunk"));
  ASSERT_FALSE(bytes.empty());
  bytes[bytes.size() / 2] ^= 1;
  WriteFile(Path("chunk"), std::vector<uint8_t>(bytes.begin(), bytes.end()));
  ASSERT_EQ(Rados("put " + victim + " " + Path("chunk")), 0);
  RunResult r = Run("verify " + Url("a"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("rados://vmsnap/" + victim + ": its bytes do not match its name"), std::string::npos) << r.err;
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  ASSERT_EQ(Rados("rm " + victim), 0);
  r = Run("verify " + Url("a"));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("rados://vmsnap/" + victim + ": chunk of " + prefix_ + "a is missing from the store"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  ::unsetenv("XDG_CACHE_HOME");
}

TEST_F(StoreFaults, WrongPoolOrIdentityGetsOneLine) {
  WriteSnapshot(Path("a.vmsnap"), 16, 23);
  struct Case {
    std::string env, args, expect;
  } cases[] = {
      {"", "push " + Path("a.vmsnap") + " rados://no-such-pool/a", "rados://no-such-pool: no such pool"},
      {"", "ls rados://no-such-pool", "rados://no-such-pool: no such pool"},
      {"", "gc rados://no-such-pool", "rados://no-such-pool: no such pool"},
      {"", "verify rados://no-such-pool/a", "rados://no-such-pool: no such pool"},
      {"CEPH_ARGS='--name client.nobody --keyring /dev/null'", "push " + Path("a.vmsnap") + " " + Url("a"),
       "rados://vmsnap: connect to the cluster"},
      {"CEPH_ARGS='--key AQBVrCtpAAAAABAA0mZ5wSJ1ulEyHGLtbaXiwA=='", "pull " + Url("a") + " -o " + Path("x.vmsnap"),
       "rados://vmsnap: connect to the cluster"},
      {"", "push " + Path("a.vmsnap") + " " + Url("a") + " --ceph-conf " + Path("none.conf"),
       "read the cluster configuration " + Path("none.conf")},
  };
  for (const auto& c : cases) {
    RunResult r = RunWith(c.env, c.args);
    EXPECT_EQ(r.status, 2) << c.env << " " << c.args << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.env << " " << c.args << ": " << r.err;
    EXPECT_EQ(Lines(r.err), 1u) << c.env << " " << c.args << ": " << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(Path("x.vmsnap")));
}

}  // namespace
}  // namespace vmsnap
