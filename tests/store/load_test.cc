// SPDX-License-Identifier: MIT
// `vmsnap load rados://POOL/NAME` on the real single-node cluster: a guest
// that reads every page of its memory (tests/guests/allpages.S) runs from the
// store as it runs from the local file (also as a warm start through
// `serve`), the second load is served by the local cache, a deleted or
// altered chunk object stops the VM naming it, and a cluster that stops
// answering in the middle of a load stops the VM with one line instead of
// hanging it, leaving a cache the next load can use; an incremental chain
// loads the same way, each page from the layer that holds it.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "format/reader.h"
#include "tests/store/store_fixture.h"

namespace vmsnap {
namespace {

using testing::ReadFile;
using testing::RunResult;
namespace fs = std::filesystem;

class StoreLoad : public storetest::Store {
 protected:
  // The allpages guest's snapshot (taken at its doorbell), pushed as NAME.
  void SnapshotAndPush(const std::string& name, const std::string& mem, const std::string& compress) {
    const std::string guest = std::string(VMSNAP_GUEST_DIR) + "/allpages.elf";
    RunResult run = Run("run " + guest + " --mem " + mem + " --compress " + compress +
                        " --snapshot-on-doorbell " + name + ".vmsnap --serial run.txt");
    ASSERT_EQ(run.status, 0) << run.err;
    ASSERT_EQ(ReadFile(Path("run.txt")), "allpages: ok\n");
    RunResult push = Run("push " + name + ".vmsnap " + Url(name));
    ASSERT_EQ(push.status, 0) << push.err;
  }
  // The chunk objects of a local snapshot file, in manifest order: each is
  // named by the SHA-256 of the chunk's stored bytes.
  std::vector<std::string> Chunks(const std::string& file) {
    std::vector<std::string> out;
    auto r = SnapshotReader::Open(Path(file));
    EXPECT_TRUE(r.ok());
    if (!r.ok()) return out;
    const std::string bytes = ReadFile(Path(file));
    for (const ChunkInfo& c : r.value()->chunk_index()) {
      if (c.stored_length == 0) continue;
      std::ofstream(Path("slice.bin"), std::ios::binary)
          .write(bytes.data() + c.file_offset, std::streamsize(c.stored_length));
      FILE* p = ::popen(("sha256sum " + Path("slice.bin")).c_str(), "r");
      char hex[65] = {};
      if (p != nullptr && std::fread(hex, 1, 64, p) == 64) out.push_back(std::string("vmsnap.chunk.") + hex);
      if (p != nullptr) ::pclose(p);
    }
    return out;
  }
};

TEST_F(StoreLoad, GuestRunsAsFromTheFileAndTheSecondLoadUsesTheCache) {
  SnapshotAndPush("a", "64M", "zstd");
  RunResult local = Run("load a.vmsnap --serial local.txt");
  ASSERT_EQ(local.status, 0) << local.err;
  RunResult remote = Run("load " + Url("a") + " --cache-dir cache --serial remote.txt");
  ASSERT_EQ(remote.status, 0) << remote.err;
  EXPECT_EQ(ReadFile(Path("remote.txt")), ReadFile(Path("local.txt")));
  EXPECT_EQ(ReadFile(Path("remote.txt")), "allpages: ok\n");
  EXPECT_NE(remote.err.find("fetched"), std::string::npos) << remote.err;

  // A warm start of the URL: the serve worker, which opened its session
  // with the pool before the request, fetches it into the server's cache.
  RunResult bad = Run("serve --control bad.sock --pool 1 --store " + Url("a"));
  EXPECT_EQ(bad.status, 2) << bad.err;
  EXPECT_NE(bad.err.find("give the store alone"), std::string::npos) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  ::setenv("XDG_CACHE_HOME", Path("xdg").c_str(), 1);
  Spawn({"serve", "--control", Path("srv.sock"), "--pool", "1", "--mem", "64M", "--store", "rados://vmsnap",
         "--cache-dir", Path("srvcache")});
  ::unsetenv("XDG_CACHE_HOME");
  ASSERT_TRUE(WaitForSocket(Path("srv.sock")));
  RunResult via = Run("load " + Url("a") + " --via srv.sock --serial via.txt");
  EXPECT_EQ(via.status, 0) << via.err;
  EXPECT_EQ(ReadFile(Path("via.txt")), "allpages: ok\n");
  EXPECT_TRUE(fs::exists(Path("srvcache")));
  EXPECT_FALSE(fs::exists(Path("xdg/vmsnap/lazy")));

  // Every chunk object gone: the second load needs only the layout.
  const std::vector<std::string> chunks = Chunks("a.vmsnap");
  ASSERT_FALSE(chunks.empty());
  for (const std::string& c : chunks) (void)std::system(("rados -p vmsnap rm " + c + " 2>/dev/null").c_str());
  RunResult again = Run("load " + Url("a") + " --cache-dir cache --serial again.txt");
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(ReadFile(Path("again.txt")), "allpages: ok\n");
  EXPECT_NE(again.err.find("0 chunks fetched"), std::string::npos) << again.err;

  // A fresh cache must fetch, and names the first chunk object it lacks.
  RunResult fresh = Run("load " + Url("a") + " --cache-dir fresh --serial fresh.txt");
  EXPECT_EQ(fresh.status, 125) << fresh.err;
  EXPECT_NE(fresh.err.find("is missing from the store"), std::string::npos) << fresh.err;
  EXPECT_NE(fresh.err.find("vmsnap.chunk."), std::string::npos) << fresh.err;
  EXPECT_EQ(std::count(fresh.err.begin(), fresh.err.end(), '\n'), 1) << fresh.err;
  EXPECT_EQ(ReadFile(Path("fresh.txt")).find("allpages: ok"), std::string::npos);
}

TEST_F(StoreLoad, AnAlteredChunkNeverReachesTheGuestOrTheCache) {
  SnapshotAndPush("b", "16M", "zstd");
  const std::vector<std::string> chunks = Chunks("b.vmsnap");
  ASSERT_FALSE(chunks.empty());
  // Same size, other bytes.
  const std::string tmp = Path("obj.bin");
  ASSERT_EQ(std::system(("rados -p vmsnap get " + chunks[0] + " " + tmp).c_str()), 0);
  ASSERT_EQ(std::system(("printf 'XXXXXXXX' | dd of=" + tmp + " conv=notrunc status=none").c_str()), 0);
  ASSERT_EQ(std::system(("rados -p vmsnap put " + chunks[0] + " " + tmp).c_str()), 0);
  RunResult r = Run("load " + Url("b") + " --cache-dir cache --serial out.txt");
  EXPECT_EQ(r.status, 125) << r.err;
  EXPECT_NE(r.err.find(chunks[0] + ": its bytes do not match its name"), std::string::npos) << r.err;
  EXPECT_EQ(ReadFile(Path("out.txt")).find("allpages: ok"), std::string::npos);
  // Nothing in the cache claims the altered chunk: its place is still a hole.
  const std::string chunk_bytes = ReadFile(tmp);
  for (const auto& e : fs::directory_iterator(Path("cache"))) {
    if (e.path().extension() == ".vmsnap") {
      EXPECT_EQ(ReadFile(e.path().string()).find(chunk_bytes), std::string::npos);
    }
  }
}

TEST_F(StoreLoad, ClusterGoneMidLoadStopsTheVmAndLeavesAUsableCache) {
  // Large enough that the fetch is still running when the OSD dies.
  SnapshotAndPush("c", "256M", "none");
  pid_t vm = Spawn({"load", Url("c"), "--cache-dir", "cache", "--serial", "out.txt", "--fetch-parallel", "2",
                    "--fetch-timeout", "3"},
                   Path("err.txt"));
  // The cache file appears once the layout is read; the chunks follow.
  bool seen = false;
  for (int i = 0; i < 20000 && !seen; ++i) {
    if (fs::exists(Path("cache"))) {
      for (const auto& e : fs::directory_iterator(Path("cache"))) seen |= e.path().extension() == ".chunks";
    }
    if (!seen) std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  ASSERT_TRUE(seen);
  ASSERT_EQ(Cluster("kill-osd"), 0);
  const auto t0 = std::chrono::steady_clock::now();
  const int status = Wait(vm, std::chrono::seconds(60));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string err = ReadFile(Path("err.txt"));
  ASSERT_EQ(Cluster("start-osd"), 0);
  EXPECT_EQ(status, 125) << err;
  EXPECT_LT(took, 30.0) << "the VM hung instead of stopping";
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find("did not deliver it within 3 s"), std::string::npos) << err;
  EXPECT_EQ(ReadFile(Path("out.txt")).find("allpages: ok"), std::string::npos);

  // The cluster is back: the same cache completes the load, every chunk checked.
  RunResult again = Run("load " + Url("c") + " --cache-dir cache --serial again.txt");
  EXPECT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(ReadFile(Path("again.txt")), "allpages: ok\n");
}

// A load opens the chain from the cache's record of the name while the
// cluster session starts, and confirms it before the guest runs: a name
// pushed again with other bytes starts the new snapshot, never the recorded
// one, and a session that fails still gives the store's one line.
TEST_F(StoreLoad, ANamePushedAgainStartsTheNewSnapshotNotTheRecordedOne) {
  SnapshotAndPush("n", "16M", "zstd");
  RunResult first = Run("load " + Url("n") + " --cache-dir cache --serial first.txt");
  ASSERT_EQ(first.status, 0) << first.err;
  ASSERT_EQ(ReadFile(Path("first.txt")), "allpages: ok\n");
  ASSERT_TRUE(fs::exists(Path("cache/names")));
  ASSERT_EQ(std::distance(fs::directory_iterator(Path("cache/names")), fs::directory_iterator()), 1);
  EXPECT_EQ(first.err.find("record of the name"), std::string::npos) << first.err;
  // Recorded and unchanged: the second load starts from the record.
  RunResult second = Run("load " + Url("n") + " --cache-dir cache --serial second.txt");
  ASSERT_EQ(second.status, 0) << second.err;
  EXPECT_EQ(ReadFile(Path("second.txt")), "allpages: ok\n");
  EXPECT_NE(second.err.find("; started from the cache's record of the name"), std::string::npos) << second.err;

  // Another guest under the same name: regs exits 42 once loaded.
  RunResult regs = Run("run " + std::string(VMSNAP_GUEST_DIR) + "/regs.elf --mem 16M --snapshot-on-doorbell regs{n}.vmsnap");
  ASSERT_EQ(regs.status, 42) << regs.err;
  RunResult push = Run("push regs1.vmsnap " + Url("n"));
  ASSERT_EQ(push.status, 0) << push.err;
  RunResult third = Run("load " + Url("n") + " --cache-dir cache --serial third.txt");
  EXPECT_EQ(third.status, 42) << third.err;
  EXPECT_EQ(ReadFile(Path("third.txt")).find("allpages"), std::string::npos);
  EXPECT_NE(third.err.find("; the cache's record of the name was outdated"), std::string::npos) << third.err;
  // The same with every chunk fetched first.
  ASSERT_EQ(Run("push n.vmsnap " + Url("n")).status, 0);
  RunResult eager = Run("load " + Url("n") + " --cache-dir cache --memory eager --serial eager.txt");
  EXPECT_EQ(eager.status, 0) << eager.err;
  EXPECT_EQ(ReadFile(Path("eager.txt")), "allpages: ok\n");
  ASSERT_EQ(Run("push regs1.vmsnap " + Url("n")).status, 0);
  RunResult eager2 = Run("load " + Url("n") + " --cache-dir cache --memory eager --serial eager2.txt");
  EXPECT_EQ(eager2.status, 42) << eager2.err;
  EXPECT_NE(eager2.err.find("; the cache's record of the name was outdated"), std::string::npos) << eager2.err;

  // A recorded name, a session that cannot open: the store's line, nothing
  // from the guest.
  RunResult denied = RunWith("CEPH_ARGS='--key AQBVrCtpAAAAABAA0mZ5wSJ1ulEyHGLtbaXiwA=='",
                             "load " + Url("n") + " --cache-dir cache --serial denied.txt");
  EXPECT_EQ(denied.status, 125) << denied.err;
  EXPECT_NE(denied.err.find("rados://vmsnap: connect to the cluster"), std::string::npos) << denied.err;
  EXPECT_EQ(std::count(denied.err.begin(), denied.err.end(), '\n'), 1) << denied.err;
  EXPECT_EQ(ReadFile(Path("denied.txt")), "");
  RunResult nopool = Run("load rados://no-such-pool/n --cache-dir cache --serial nopool.txt");
  EXPECT_EQ(nopool.status, 125) << nopool.err;
  EXPECT_NE(nopool.err.find("rados://no-such-pool: no such pool"), std::string::npos) << nopool.err;
  EXPECT_EQ(std::count(nopool.err.begin(), nopool.err.end(), '\n'), 1) << nopool.err;
  // Only a load the store confirmed leaves a record.
  EXPECT_EQ(std::distance(fs::directory_iterator(Path("cache/names")), fs::directory_iterator()), 1);
}

// Disk blocks of the regular files under `dir` (what --cache-size counts).
uint64_t BlocksIn(const std::string& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    struct stat st {};
    if (e.is_regular_file() && !e.is_symlink() && ::stat(e.path().c_str(), &st) == 0) n += uint64_t(st.st_blocks) * 512;
  }
  return n;
}

size_t FilesIn(const std::string& dir) {
  std::error_code ec;
  size_t n = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) ++n;
  return n;
}

// --cache-size counts the names' records with the snapshots' files: one
// snapshot loaded under many names stays within the limit, the least
// recently used records going first. A record whose snapshot the cache
// removed is noticed: that load reads the store (and makes no room on the
// record's word) and starts the name's snapshot.
TEST_F(StoreLoad, TheCacheSizeCountsNameRecordsAndARecordOfARemovedSnapshotIsNoticed) {
  SnapshotAndPush("m0", "16M", "zstd");
  for (int i = 1; i < 6; ++i) ASSERT_EQ(Run("push m0.vmsnap " + Url("m" + std::to_string(i))).status, 0);
  // Eager: every chunk is in the file once the load ends.
  RunResult first = Run("load " + Url("m0") + " --memory eager --cache-dir cache --serial m.txt");
  ASSERT_EQ(first.status, 0) << first.err;
  ASSERT_EQ(FilesIn(Path("cache/names")), 1u);
  const uint64_t record = BlocksIn(Path("cache/names"));
  ASSERT_GT(record, 0u);
  // The snapshot and room for three records.
  const std::string limit = std::to_string(BlocksIn(Path("cache")) + 2 * record);
  for (int i = 1; i < 6; ++i) {
    const std::string name = "m" + std::to_string(i);
    RunResult r = Run("load " + Url(name) + " --memory eager --cache-dir cache --cache-size " + limit + " --serial m.txt");
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(ReadFile(Path("m.txt")), "allpages: ok\n");
    EXPECT_LE(BlocksIn(Path("cache")), std::stoull(limit)) << "over --cache-size after loading " << name;
  }
  EXPECT_EQ(FilesIn(Path("cache/names")), 3u);
  RunResult latest = Run("load " + Url("m5") + " --memory eager --cache-dir cache --cache-size " + limit +
                         " --serial m.txt");
  ASSERT_EQ(latest.status, 0) << latest.err;
  EXPECT_NE(latest.err.find("; started from the cache's record of the name"), std::string::npos) << latest.err;
  RunResult oldest = Run("load " + Url("m1") + " --memory eager --cache-dir cache --cache-size " + limit +
                         " --serial m.txt");
  ASSERT_EQ(oldest.status, 0) << oldest.err;
  EXPECT_EQ(oldest.err.find("record of the name"), std::string::npos) << "m1's record outlived newer ones";
  EXPECT_LE(BlocksIn(Path("cache")), std::stoull(limit));

  // Another snapshot that takes the room of the first one's files, not of
  // the latest record (m1's).
  RunResult regs = Run("run " + std::string(VMSNAP_GUEST_DIR) + "/regs.elf --mem 16M --snapshot-on-doorbell r{n}.vmsnap");
  ASSERT_EQ(regs.status, 42) << regs.err;
  ASSERT_EQ(Run("push r1.vmsnap " + Url("r")).status, 0);
  RunResult other = Run("load " + Url("r") + " --cache-dir cache --cache-size " + limit + " --serial r.txt");
  ASSERT_EQ(other.status, 42) << other.err;
  EXPECT_LE(BlocksIn(Path("cache")), std::stoull(limit));
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(Path("cache"))) files += e.path().extension() == ".vmsnap";
  ASSERT_EQ(files, 1u) << "the first snapshot's file was kept";
  ASSERT_GE(FilesIn(Path("cache/names")), 2u);
  RunResult noticed = Run("load " + Url("m1") + " --cache-dir cache --serial n.txt");
  ASSERT_EQ(noticed.status, 0) << noticed.err;
  EXPECT_EQ(ReadFile(Path("n.txt")), "allpages: ok\n");
  EXPECT_NE(noticed.err.find("; the cache no longer held the recorded snapshot"), std::string::npos) << noticed.err;
}

// The established TCP connections of process `pid` (/proc/net/tcp{,6}
// rows whose socket inode the process holds).
int TcpSessions(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    const std::string target = fs::read_symlink(e.path(), ec).string();
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  int n = 0;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream row(line);
      std::string f[10];
      for (auto& x : f) row >> x;
      n += f[3] == "01" && inodes.count(f[9]) > 0;  // 01: ESTABLISHED
    }
  }
  return n;
}

std::vector<pid_t> ChildrenOf(pid_t parent) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string stat = ReadFile(e.path().string() + "/stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) out.push_back(pid_t(std::atoi(e.path().filename().c_str())));
  }
  return out;
}

// `serve --store` opens each warm VM's cluster session before its client
// comes, and the request uses it: once the worker holds its sessions (the
// monitor's and the OSD's), the configuration it was started with is made
// to point at nothing, and a warm start of a URL still runs, where a new
// session would fail to find a monitor.
TEST_F(StoreLoad, AWarmWorkerUsesTheSessionServeOpenedForIt) {
  SnapshotAndPush("w", "16M", "zstd");
  std::string conf = ReadFile(std::getenv("CEPH_CONF"));
  const size_t global = conf.find("[global]\n");
  ASSERT_NE(global, std::string::npos);
  conf.insert(global + 9, "client mount timeout = 2\n");
  storetest::WriteFile(Path("ceph.conf"), std::vector<uint8_t>(conf.begin(), conf.end()));
  const pid_t srv = Spawn({"serve", "--control", Path("srv.sock"), "--pool", "1", "--mem", "16M", "--store",
                           "rados://vmsnap", "--ceph-conf", Path("ceph.conf"), "--cache-dir", Path("srvcache")});
  ASSERT_TRUE(WaitForSocket(Path("srv.sock")));
  bool warm = false;
  for (int i = 0; i < 3000 && !warm; ++i) {
    for (pid_t w : ChildrenOf(srv)) warm |= TcpSessions(w) >= 2;
    if (!warm) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(warm) << "no worker of serve opened its sessions with the cluster";
  const std::regex mon("mon host = [^\n]*");
  const std::string dead = std::regex_replace(conf, mon, "mon host = v2:127.0.0.1:1");
  ASSERT_NE(dead, conf);
  storetest::WriteFile(Path("ceph.conf"), std::vector<uint8_t>(dead.begin(), dead.end()));
  RunResult via = Run("load " + Url("w") + " --via srv.sock --serial via.txt");
  EXPECT_EQ(via.status, 0) << via.err;
  EXPECT_EQ(ReadFile(Path("via.txt")), "allpages: ok\n");
}

// serve loads each --store's client library before it forks its warm VMs'
// processes, by the store's scheme: an S3 store's libcurl too, not only
// librados (a worker would otherwise load it after the fork, on the way to
// its first request).
class StoreServeS3 : public storetest::S3 {};

TEST_F(StoreServeS3, ServeLoadsTheS3ClientBeforeItForksItsWorkers) {
  const pid_t srv = Spawn({"serve", "--control", Path("srv.sock"), "--pool", "1", "--mem", "16M", "--store", Folder(),
                           "--cache-dir", Path("srvcache")});
  ASSERT_TRUE(WaitForSocket(Path("srv.sock")));
  const std::string maps = ReadFile("/proc/" + std::to_string(srv) + "/maps");
  EXPECT_NE(maps.find("libcurl.so"), std::string::npos) << "serve did not load libcurl for " << Folder();
}

// A chain save --incremental made (incr_rounds: a full snapshot at the first
// doorbell, then one layer per round) loaded lazily from the store: the
// guest's closing hash reads every data page, and they come from all three
// layers, so a page served from the wrong layer (or not at all) changes it.
// Then the same as a warm start, and a parent pushed again with other
// content under its name is refused before the VM starts.
TEST_F(StoreLoad, AnIncrementalChainLoadsLazilyWithPagesFromEveryLayer) {
  RunResult run = Run("run " + std::string(VMSNAP_DIRTY_GUEST_DIR) + "/incr_rounds.elf --mem 16M "
                      "--snapshot-on-doorbell 'inc-{n}.vmsnap' --incremental --serial run.txt");
  ASSERT_EQ(run.status, 0) << run.err;
  const std::string folder = "rados://vmsnap/" + prefix_ + "/";
  RunResult push = Run("push inc-3.vmsnap " + folder + "inc-3 --json");
  ASSERT_EQ(push.status, 0) << push.err;
  EXPECT_EQ(storetest::Json::parse(push.out)["pushed_parents"].size(), 2u) << push.out;
  RunResult local = Run("load inc-3.vmsnap --serial local.txt");
  ASSERT_EQ(local.status, 0) << local.err;
  ASSERT_NE(ReadFile(Path("local.txt")).find("hash "), std::string::npos);
  RunResult remote = Run("load " + folder + "inc-3 --cache-dir cache --serial remote.txt");
  ASSERT_EQ(remote.status, 0) << remote.err;
  EXPECT_EQ(ReadFile(Path("remote.txt")), ReadFile(Path("local.txt")));
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(Path("cache"))) files += e.path().extension() == ".vmsnap";
  EXPECT_EQ(files, 3u) << "one cache file per layer";

  // A cache that holds the root layer (from a load of it) and has no room
  // for more: opening the layers above it must not evict the root the
  // chain has just opened (they are used without being kept instead).
  RunResult base = Run("load " + folder + "inc-1 --cache-dir small --serial base.txt");
  ASSERT_EQ(base.status, 0) << base.err;
  uint64_t used = 0;
  for (const auto& e : fs::directory_iterator(Path("small"))) {
    struct stat st {};
    if (e.is_regular_file() && ::stat(e.path().c_str(), &st) == 0) used += uint64_t(st.st_blocks) * 512;
  }
  RunResult small = Run("load " + folder + "inc-3 --cache-dir small --cache-size " + std::to_string(used + 4096) +
                        " --serial small.txt");
  ASSERT_EQ(small.status, 0) << small.err;
  EXPECT_EQ(ReadFile(Path("small.txt")), ReadFile(Path("local.txt")));

  Spawn({"serve", "--control", Path("srv.sock"), "--pool", "1", "--mem", "16M", "--store", "rados://vmsnap",
         "--cache-dir", Path("srvcache")});
  ASSERT_TRUE(WaitForSocket(Path("srv.sock")));
  RunResult via = Run("load " + folder + "inc-3 --via srv.sock --serial via.txt");
  EXPECT_EQ(via.status, 0) << via.err;
  EXPECT_EQ(ReadFile(Path("via.txt")), ReadFile(Path("local.txt")));

  // inc-2's name now holds inc-1's layout: another snapshot.
  ASSERT_EQ(Rados("get vmsnap.snap." + prefix_ + "/inc-1 " + Path("layout.bin")), 0);
  ASSERT_EQ(Rados("put vmsnap.snap." + prefix_ + "/inc-2 " + Path("layout.bin")), 0);
  RunResult bad = Run("load " + folder + "inc-3 --cache-dir cache --serial bad.txt");
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("is not the parent of"), std::string::npos) << bad.err;
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  EXPECT_EQ(ReadFile(Path("bad.txt")), "");
}

}  // namespace
}  // namespace vmsnap
