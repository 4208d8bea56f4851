// SPDX-License-Identifier: MIT
// `vmsnap serve` and `vmsnap load --via` on real KVM: a warm start prints and
// exits as a plain load does, a snapshot of another shape falls back to a
// cold start and says so once, concurrent clients each get their own VM, and
// bad or vanishing clients leave the server serving, and warm VMs bound ahead
// to a snapshot start it as an unbound one would, and the pool refills while
// its guests run without leaving KVM. Also the generation ID:
// every run and load gives the guest a fresh one. And the reader the
// clients read reply lines with.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "format/reader.h"
#include "tests/cli_fixture.h"
#include "vmm/control.h"
#include "vmm/load_via.h"
#include "vmm/serve.h"

namespace vmsnap::testing {
namespace {

std::string Guest(const std::string& name) { return std::string(VMSNAP_GUEST_DIR) + "/" + name; }

// The IDs in the guest's "genid before:" / "genid after:" lines.
std::vector<std::string> Ids(const std::string& out, const std::string& which) {
  std::vector<std::string> ids;
  std::regex re("genid " + which + ": ([0-9a-f]{32})\n");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator(); ++it) {
    ids.push_back((*it)[1]);
  }
  return ids;
}

// The guest prints the ID as two little-endian qwords in hex; inspect
// prints its bytes in order.
std::string IdBytes(const std::string& printed) {
  std::string out;
  for (int half = 0; half < 2; ++half) {
    for (int b = 7; b >= 0; --b) out += printed.substr(size_t(half * 16 + b * 2), 2);
  }
  return out;
}

// Children of `pid` (the warm VMs' processes of a server).
std::vector<pid_t> Children(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> kids;
  for (pid_t k; in >> k;) kids.push_back(k);
  return kids;
}

// How many of a server's idle warm VMs map an image (a bound one does).
size_t MappingAnImage(pid_t server) {
  size_t n = 0;
  for (pid_t k : Children(server)) {
    n += ReadFile("/proc/" + std::to_string(k) + "/maps").find(".img\n") != std::string::npos;
  }
  return n;
}

// Whether this host lets a process make a userfaultfd (a warm VM arms its
// pager where it does).
bool UserfaultfdWorks() {
  const int fd = int(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd >= 0) ::close(fd);
  return fd >= 0;
}

// Whether process `pid` holds a userfaultfd (a warm VM's armed pager).
bool HoldsUserfaultfd(pid_t pid) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code lec;
    if (std::filesystem::read_symlink(e.path(), lec).string().find("userfaultfd") != std::string::npos) return true;
  }
  return false;
}

// Waits up to `limit` for `done()`.
bool WaitUntil(const std::function<bool()>& done, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

// Sends `data` on a fresh connection to `sock` and returns the first line
// of the reply ("" if none within 10 s).
std::string RawRequest(const std::string& sock, const std::string& data) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, sock.c_str(), sizeof a.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += size_t(n);
  }
  std::string line;
  char c;
  while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
  ::close(fd);
  return line;
}

// The clients' reader of reply lines (`load --via`, `save --control`): it
// reads a buffer at a time, so a line may come with the next one, in
// pieces, or cut off by the server going away.
TEST(ReplyReader, GivesEachLineWhateverTheReadsBringAndNamesAnEndWithoutOne) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  auto put = [&](const std::string& s) { ASSERT_EQ(::send(sv[1], s.data(), s.size(), 0), ssize_t(s.size())); };
  vmm::ReplyReader reader(sv[0]);
  put("{\"note\":\"cold\"}\n{\"ok\":true}\npar");
  auto a = reader.Next();
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_EQ(*a, "{\"note\":\"cold\"}");
  auto b = reader.Next();
  ASSERT_TRUE(b.ok()) << b.status().message();
  EXPECT_EQ(*b, "{\"ok\":true}");
  std::thread rest([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    put("t\n\n");
  });
  auto c = reader.Next();
  rest.join();
  ASSERT_TRUE(c.ok()) << c.status().message();
  EXPECT_EQ(*c, "part");
  auto empty = reader.Next();
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, "");
  // A line the server never ends, then the server gone: an I/O error.
  put("{\"ok\":tr");
  ::close(sv[1]);
  auto cut = reader.Next();
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.status().code(), Code::kIo);
  ::close(sv[0]);

  // Over 64 KiB without a newline: refused, not read for ever.
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  std::thread flood([&] {
    const std::string chunk(4096, 'x');
    for (size_t sent = 0; sent <= vmm::kMaxRequestLine + chunk.size();) {
      ssize_t n = ::send(sv[1], chunk.data(), chunk.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += size_t(n);
    }
  });
  vmm::ReplyReader long_reader(sv[0]);
  auto too_long = long_reader.Next();
  ::close(sv[0]);
  flood.join();
  ::close(sv[1]);
  ASSERT_FALSE(too_long.ok());
  EXPECT_EQ(too_long.status().code(), Code::kInvalidArgument);
}

class Serve : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    // The servers' verification stamps and images stay in the test's directory.
    ::setenv("XDG_CACHE_HOME", Path("cache").c_str(), 1);
    run_ = Run("run " + Guest("genid.elf") + " --mem 64M --snapshot-on-doorbell snap{n}.vmsnap");
    ASSERT_EQ(run_.status, 42) << run_.err;
  }
  void TearDown() override {
    ::unsetenv("XDG_CACHE_HOME");
    CliTest::TearDown();
  }
  pid_t StartServer(const std::string& mem, int pool = 2) {
    pid_t pid = Spawn({"serve", "--control", Path("pool.sock"), "--pool", std::to_string(pool), "--mem", mem});
    EXPECT_TRUE(WaitForSocket(Path("pool.sock")));
    return pid;
  }
  // `load --via`, with stderr in its own file so that threads may call it.
  RunResult Via(const std::string& tag, int timeout_s = 60, const std::string& snapshot = "snap1.vmsnap") {
    const std::string err = Path("err-" + tag + ".txt");
    std::string cmd = "cd " + dir_ + " && timeout " + std::to_string(timeout_s) + " " + VMSNAP_BIN +
                      " load --via pool.sock " + snapshot + " 2>" + err;
    RunResult r;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return r;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.err = ReadFile(err);
    return r;
  }
  RunResult run_;
};

TEST_F(Serve, EveryRunAndLoadGivesTheGuestAFreshGenerationId) {
  // A VM keeps its ID across its own doorbell snapshot; each load is a new
  // clone and gets a new one.
  auto before = Ids(run_.out, "before"), after = Ids(run_.out, "after");
  ASSERT_EQ(before.size(), 1u) << run_.out;
  ASSERT_EQ(after.size(), 1u) << run_.out;
  EXPECT_EQ(before[0], after[0]);
  RunResult a = Run("load snap1.vmsnap");
  RunResult b = Run("load snap1.vmsnap");
  ASSERT_EQ(a.status, 42) << a.err;
  ASSERT_EQ(b.status, 42) << b.err;
  auto ia = Ids(a.out, "after"), ib = Ids(b.out, "after");
  ASSERT_EQ(ia.size(), 1u) << a.out;
  ASSERT_EQ(ib.size(), 1u) << b.out;
  EXPECT_TRUE(Ids(a.out, "before").empty()) << "a load resumes after the doorbell";
  std::set<std::string> all{before[0], ia[0], ib[0]};
  EXPECT_EQ(all.size(), 3u) << before[0] << " " << ia[0] << " " << ib[0];
  EXPECT_EQ(all.count(std::string(32, '0')), 0u);
}

TEST_F(Serve, SnapshotsRecordTheLineageOfLoads) {
  // snap1 was taken in the booted VM; a load of it (generation A) that rings
  // the doorbell again saves a snapshot whose lineage is the boot, then A.
  RunResult a = Run("load snap1.vmsnap --snapshot-on-doorbell clone.vmsnap");
  ASSERT_EQ(a.status, 42) << a.err;
  RunResult j1 = Run("inspect --json snap1.vmsnap");
  RunResult j2 = Run("inspect --json clone.vmsnap");
  ASSERT_EQ(j1.status, 0) << j1.err;
  ASSERT_EQ(j2.status, 0) << j2.err;
  const std::string boot = IdBytes(Ids(run_.out, "before").at(0));
  const std::string gen_a = IdBytes(Ids(a.out, "after").at(0));
  auto s1 = nlohmann::json::parse(j1.out), s2 = nlohmann::json::parse(j2.out);
  ASSERT_EQ(s1["loads"].size(), 1u) << j1.out;
  EXPECT_EQ(s1["loads"][0]["generation_id"], boot);
  EXPECT_TRUE(s1["loads"][0]["snapshot_id"].is_null());
  ASSERT_EQ(s2["loads"].size(), 2u) << j2.out;
  EXPECT_EQ(s2["loads"][0], s1["loads"][0]);
  EXPECT_EQ(s2["loads"][1]["generation_id"], gen_a);
  EXPECT_EQ(s2["loads"][1]["snapshot_id"], s1["id"]);
  EXPECT_EQ(s2["loads"][1]["warm"], false);
  // The record is the lineage, not a device.
  EXPECT_TRUE(s2["devices"].empty()) << j2.out;
  RunResult text = Run("inspect clone.vmsnap");
  EXPECT_NE(text.out.find("booted"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("loaded"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("generation " + gen_a), std::string::npos) << text.out;
  // diff does not count two loads' different lineages as a difference.
  RunResult b = Run("load snap1.vmsnap --snapshot-on-doorbell clone2.vmsnap");
  ASSERT_EQ(b.status, 42) << b.err;
  RunResult d = Run("diff --json clone.vmsnap clone2.vmsnap");
  EXPECT_EQ(d.out.find("loads"), std::string::npos) << d.out;
}

TEST_F(Serve, AWarmLoadIsInTheLineageOfTheSnapshotsItsGuestTakes) {
  // As a cold load: snap1's lineage (the boot), then this warm load, whose
  // generation ID is the one its guest printed.
  StartServer("64M");
  RunResult w = Run("load --via pool.sock snap1.vmsnap --snapshot-on-doorbell warm.vmsnap");
  ASSERT_EQ(w.status, 42) << w.err;
  EXPECT_EQ(w.err, "");
  RunResult j1 = Run("inspect --json snap1.vmsnap");
  RunResult j2 = Run("inspect --json warm.vmsnap");
  ASSERT_EQ(j2.status, 0) << j2.err;
  auto s1 = nlohmann::json::parse(j1.out), s2 = nlohmann::json::parse(j2.out);
  ASSERT_EQ(s2["loads"].size(), 2u) << j2.out;
  EXPECT_EQ(s2["loads"][0], s1["loads"][0]);
  ASSERT_EQ(Ids(w.out, "after").size(), 1u) << w.out;
  EXPECT_EQ(s2["loads"][1]["generation_id"], IdBytes(Ids(w.out, "after")[0]));
  EXPECT_EQ(s2["loads"][1]["snapshot_id"], s1["id"]);
  EXPECT_EQ(s2["loads"][1]["warm"], true);
}

TEST_F(Serve, WarmLoadPrintsAndExitsAsAPlainLoad) {
  StartServer("64M");
  RunResult cold = Run("load snap1.vmsnap");
  RunResult warm = Via("warm");
  ASSERT_EQ(cold.status, 42) << cold.err;
  EXPECT_EQ(warm.status, 42) << warm.err;
  EXPECT_EQ(warm.err, "");
  // Same output but for the ID, which differs.
  std::regex id("[0-9a-f]{32}");
  EXPECT_EQ(std::regex_replace(warm.out, id, "ID"), std::regex_replace(cold.out, id, "ID"));
  ASSERT_EQ(Ids(warm.out, "after").size(), 1u);
  EXPECT_NE(Ids(warm.out, "after")[0], Ids(cold.out, "after")[0]);
  // --serial sends the output to a file instead.
  RunResult to_file = Run("load --via pool.sock snap1.vmsnap --serial serial.txt");
  EXPECT_EQ(to_file.status, 42) << to_file.err;
  EXPECT_EQ(to_file.out, "");
  EXPECT_EQ(Ids(ReadFile(Path("serial.txt")), "after").size(), 1u);
}

// `vmsnap` (the front) runs the plain forms of `load --via` itself and hands
// every other command line to the whole tool: the two answer every form
// alike, and the plain forms need nothing but the front.
TEST_F(Serve, TheFrontAnswersLoadViaAsTheWholeToolDoes) {
  StartServer("64M");
  const char* forms[] = {
      "load --via pool.sock snap1.vmsnap -q --serial=serial.txt",  // the guest runs: 42
      "load --via=pool.sock --progress snap1.vmsnap --serial -",   // its output on stdout
      "load --via pool.sock missing.vmsnap",                        // no such snapshot
      "load --via nobody.sock snap1.vmsnap",                        // no server there
      "load --via pool.sock snap1.vmsnap --serial /nonexistent/serial.txt",
      // Left to the whole tool's parser:
      "load --via pool.sock snap1.vmsnap --memory eager",
      "load --via pool.sock",
      "load --via pool.sock snap1.vmsnap snap2.vmsnap",
      "load --via pool.sock snap1.vmsnap --serial",
      "load --via pool.sock --via pool.sock snap1.vmsnap",
      "load --via --serial serial.txt snap1.vmsnap",
      "load --via pool.sock snap1.vmsnap --help",
  };
  std::regex id("[0-9a-f]{32}");
  for (const char* form : forms) {
    RunResult front = Run(form, 60);
    RunResult tool = Run(form, 60, VMSNAP_TOOL_BIN);
    // (--help names the program as it was called.)
    for (std::string* s : {&tool.out, &tool.err}) {
      for (size_t at; (at = s->find(VMSNAP_TOOL_BIN)) != std::string::npos;) {
        s->replace(at, std::strlen(VMSNAP_TOOL_BIN), VMSNAP_BIN);
      }
    }
    EXPECT_EQ(front.status, tool.status) << form << "\n" << front.err;
    EXPECT_EQ(front.err, tool.err) << form;
    EXPECT_EQ(std::regex_replace(front.out, id, "ID"), std::regex_replace(tool.out, id, "ID")) << form;
  }
  EXPECT_EQ(Run(forms[0], 60).status, 42);
  EXPECT_EQ(Ids(Run(forms[1], 60).out, "after").size(), 1u);
  EXPECT_EQ(Run(forms[3], 60).status, 125);

  // A front without the tool beside it still runs the plain form, and says
  // in one line what is missing for anything else.
  std::filesystem::create_directory(Path("alone"));
  std::filesystem::copy_file(VMSNAP_BIN, Path("alone/vmsnap"));
  RunResult plain = Run("load --via pool.sock snap1.vmsnap", 60, Path("alone/vmsnap"));
  EXPECT_EQ(plain.status, 42) << plain.err;
  EXPECT_EQ(Ids(plain.out, "after").size(), 1u);
  RunResult other = Run("inspect snap1.vmsnap", 60, Path("alone/vmsnap"));
  EXPECT_EQ(other.status, 2);
  EXPECT_NE(other.err.find("cannot run " + Path("alone/../libexec/vmsnap/vmsnap")), std::string::npos) << other.err;
  EXPECT_EQ(std::count(other.err.begin(), other.err.end(), '\n'), 1) << other.err;
}

TEST_F(Serve, SnapshotOfAnotherShapeStartsColdAndSaysSoOnce) {
  StartServer("32M");
  RunResult r = Via("cold");
  EXPECT_EQ(r.status, 42) << r.err;
  EXPECT_EQ(Ids(r.out, "after").size(), 1u) << r.out;
  size_t first = r.err.find("cold start");
  ASSERT_NE(first, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("cold start", first + 1), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("64 MiB"), std::string::npos) << r.err;
}

TEST_F(Serve, OneServerKeepsAPoolPerShape) {
  RunResult big = Run("run " + Guest("genid.elf") + " --mem 96M --snapshot-on-doorbell big{n}.vmsnap");
  ASSERT_EQ(big.status, 42) << big.err;
  RunResult two = Run("run " + Guest("genid.elf") + " --mem 64M --vcpus 2 --snapshot-on-doorbell two{n}.vmsnap");
  ASSERT_EQ(two.status, 42) << two.err;
  const pid_t server =
      Spawn({"serve", "--control", Path("pool.sock"), "--pool", "1", "--mem", "64M,96M", "--vcpus", "1"});
  ASSERT_TRUE(WaitForSocket(Path("pool.sock")));
  // Each snapshot goes to the pool of its shape, warm: no note. Twice each,
  // so the second start of each is served by a refilled pool.
  for (int round = 0; round < 2; ++round) {
    for (const std::string snap : {"snap1.vmsnap", "big1.vmsnap"}) {
      RunResult r = Via(snap + std::to_string(round), 60, snap);
      EXPECT_EQ(r.status, 42) << snap << ": " << r.err;
      EXPECT_EQ(r.err, "") << snap;
      EXPECT_EQ(Ids(r.out, "after").size(), 1u) << r.out;
    }
  }
  // Two vCPUs fit neither pool: cold, said once, and the guest still runs.
  RunResult cold = Via("two", 60, "two1.vmsnap");
  EXPECT_EQ(cold.status, 42) << cold.err;
  size_t first = cold.err.find("cold start");
  ASSERT_NE(first, std::string::npos) << cold.err;
  EXPECT_EQ(cold.err.find("cold start", first + 1), std::string::npos) << cold.err;
  // One warm VM of each shape again, once the pools refill.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_EQ(Children(server).size(), 2u);
}

TEST_F(Serve, ConcurrentClientsEachGetTheirOwnVm) {
  // 200 warm starts from 4 clients at once through one socket.
  const int kClients = 4, kEach = 50;
  const pid_t server = StartServer("64M", 2);
  std::vector<std::vector<RunResult>> results(kClients);
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      for (int i = 0; i < kEach; ++i) results[c].push_back(Via(std::to_string(c)));
    });
  }
  for (auto& t : threads) t.join();
  std::set<std::string> ids;
  for (const auto& rs : results) {
    for (const RunResult& r : rs) {
      EXPECT_EQ(r.status, 42) << r.err;
      auto id = Ids(r.out, "after");
      ASSERT_EQ(id.size(), 1u) << r.out << r.err;
      ids.insert(id[0]);
    }
  }
  // A VM handed to two clients would have restored twice into one guest:
  // every start has its own generation ID.
  EXPECT_EQ(ids.size(), size_t(kClients * kEach));
  // The pool returns to its size: two idle warm VMs, nothing left behind.
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (Children(server).size() != 2 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Children(server).size(), 2u);
}

TEST_F(Serve, BadAndVanishingClientsLeaveTheServerServing) {
  const pid_t server = StartServer("64M", 1);
  EXPECT_NE(RawRequest(Path("pool.sock"), "not json\n").find("\"ok\":false"), std::string::npos);
  EXPECT_NE(RawRequest(Path("pool.sock"), "{\"cmd\":\"load\",\"snapshot\":\"/x\"}\n").find("descriptors"),
            std::string::npos);
  EXPECT_NE(RawRequest(Path("pool.sock"), std::string(70 * 1024, 'x')).find("longer than"), std::string::npos);
  EXPECT_NE(RawRequest(Path("pool.sock"), "{\"cmd\":\"load\",\"snapshot\":\"/x\",\"snapshot_on_doorbell\":\"x\"}\n")
                .find("absolute"),
            std::string::npos);
  // A client killed while its guest starts.
  for (int i = 0; i < 3; ++i) {
    pid_t c = Spawn({"load", "--via", Path("pool.sock"), Path("snap1.vmsnap"), "--serial", "/dev/null"});
    std::this_thread::sleep_for(std::chrono::milliseconds(i * 5));
    ::kill(c, SIGKILL);
    Wait(c);
  }
  RunResult r = Via("after");
  EXPECT_EQ(r.status, 42) << r.err;
  EXPECT_EQ(Ids(r.out, "after").size(), 1u);
  EXPECT_EQ(::kill(server, 0), 0) << "the server ended";
}

// Decompressed images (docs/performance.md): VMs loaded from one compressed
// snapshot share its memory through the image, and an image that changed
// after it was built is never mapped.
// Warm VMs bound ahead to the snapshot they will likely be asked for: a
// start through one gives the guest what an unbound start gives it, and a
// binding whose files changed is undone.
// CLOCK_MONOTONIC in ns, as the reply's stamps are.
int64_t MonotonicNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

class Bound : public Serve {
 protected:
  void SetUp() override {
    Serve::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    RunResult regs = Run("run " + Guest("regs.elf") + " --mem 64M --snapshot-on-doorbell regs{n}.vmsnap");
    ASSERT_EQ(regs.status, 42) << regs.err;
  }
  // A start as `load --via` makes it, but sent over the socket from here,
  // so that its reply is read here: the guest's serial output and the
  // server's last reply line. (Images::StartVia runs `load --via` itself.)
  struct Started {
    std::string out;
    nlohmann::json reply;
  };
  Started StartOverSocket(const std::string& snapshot) {
    Started st;
    const std::string out = Path("start" + std::to_string(++starts_) + ".txt");
    const int serial = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int err = ::open(Path("start-err.txt").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, Path("pool.sock").c_str(), sizeof a.sun_path - 1);
    if (serial >= 0 && err >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
      timeval tv{60, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      if (vmm::SendLoadRequest(fd, Path(snapshot), serial, err).ok()) {
        vmm::ReplyReader replies(fd);
        for (auto line = replies.Next(); line.ok(); line = replies.Next()) {
          st.reply = nlohmann::json::parse(*line, nullptr, false);
          if (st.reply.is_object() && !st.reply.contains("note")) break;
        }
      }
    }
    ::close(fd);
    if (serial >= 0) ::close(serial);
    if (err >= 0) ::close(err);
    st.out = ReadFile(out);
    return st;
  }
  // Waits until `want` of the server's warm VMs are bound.
  bool WaitBound(pid_t server, size_t want) {
    // The VM that served the last start ends just after its reply.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return WaitUntil([&] { return MappingAnImage(server) >= want; }, std::chrono::seconds(60));
  }
  // Waits until `count` images are built.
  bool WaitImages(size_t count) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      size_t n = 0;
      std::error_code ec;
      for (const auto& e : std::filesystem::directory_iterator(Path("cache/vmsnap/images"), ec)) {
        n += e.path().extension() == ".stamp";
      }
      if (n >= count) return true;
      if (std::chrono::steady_clock::now() >= end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  int starts_ = 0;
};

TEST_F(Bound, ThePoolIsRefilledWhileItsGuestsNeverLeaveKvm) {
  // Guests that never exit to the VMM hold their VMs for as long as their
  // clients wait, and say nothing the server could wait for: three of them
  // through a pool of 2, the first to a VM bound to their snapshot, each
  // still get a VM, and the pool is back to 2 idle VMs beside them. (A
  // server that held a refill back until a start's first exit, and never
  // gave up waiting, would keep 4.)
  pid_t maker = Spawn({"run", Guest("quiet.elf"), "--mem", "64M", "--serial", "/dev/null", "--snapshot-on-doorbell",
                       Path("quiet.vmsnap")});
  const auto made_by = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  struct stat st {};
  while (::stat(Path("quiet.vmsnap").c_str(), &st) != 0 && std::chrono::steady_clock::now() < made_by) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(maker, SIGKILL);
  Wait(maker);
  ASSERT_EQ(::stat(Path("quiet.vmsnap").c_str(), &st), 0) << "no doorbell snapshot";
  const pid_t server = StartServer("64M", 2);
  // A first start has the server build the snapshot's image, which an idle
  // warm VM then binds to.
  pid_t first = Spawn({"load", "--via", Path("pool.sock"), Path("quiet.vmsnap"), "--serial", "/dev/null"},
                      Path("quiet-first.err"));
  ASSERT_TRUE(WaitImages(1));
  ::kill(first, SIGKILL);
  Wait(first);
  ASSERT_TRUE(WaitBound(server, 1));
  std::vector<pid_t> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(Spawn({"load", "--via", Path("pool.sock"), Path("quiet.vmsnap"), "--serial", "/dev/null"},
                            Path("quiet-" + std::to_string(i) + ".err")));
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (Children(server).size() != 5 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(Children(server).size(), 5u) << "3 running guests and 2 idle warm VMs";
  for (pid_t c : clients) EXPECT_EQ(::kill(c, 0), 0) << "a client of a guest that never exits ended";
  RunResult r = Via("after");
  EXPECT_EQ(r.status, 42) << r.err;
  for (pid_t c : clients) {
    ::kill(c, SIGKILL);
    Wait(c);
  }
}

TEST_F(Bound, AlternatedSnapshotsAreEachStartedByAVmBoundToItWithTheSameResult) {
  const pid_t server = StartServer("64M", 2);
  // The first start of each is unbound (no image yet): the reference.
  const Started genid = StartOverSocket("snap1.vmsnap");
  const Started regs = StartOverSocket("regs1.vmsnap");
  for (const Started* s : {&genid, &regs}) {
    EXPECT_EQ(s->reply.value("exit_status", -1), 42) << s->reply.dump() << s->out;
    EXPECT_EQ(s->reply.value("bound", true), false) << s->reply.dump();
  }
  EXPECT_NE(regs.out.find("regs: after doorbell\nregs: all registers, DRs and MSRs match"), std::string::npos) << regs.out;
  ASSERT_TRUE(WaitImages(2)) << "the server built no images";
  std::regex id("[0-9a-f]{32}");
  std::set<std::string> ids{Ids(genid.out, "after").at(0)};
  // Once both warm VMs are bound, one to each snapshot, every start is bound.
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(WaitBound(server, 2)) << "start " << i << ": not every warm VM is bound";
    const Started& ref = i % 2 ? regs : genid;
    const int64_t asked = MonotonicNs();
    const Started s = StartOverSocket(i % 2 ? "regs1.vmsnap" : "snap1.vmsnap");
    EXPECT_EQ(s.reply.value("exit_status", -1), 42) << i << ": " << s.reply.dump() << s.out;
    EXPECT_EQ(s.reply.value("bound", false), true) << i << ": " << s.reply.dump();
    // The reply's clock stamps: vCPU 0 entered, then exited, after the
    // request and before the answer.
    const int64_t entry = s.reply.value("first_entry_ns", int64_t(0));
    const int64_t exited = s.reply.value("first_exit_ns", int64_t(0));
    EXPECT_GT(entry, asked) << s.reply.dump();
    EXPECT_GT(exited, entry) << s.reply.dump();
    EXPECT_LT(exited, MonotonicNs()) << s.reply.dump();
    EXPECT_EQ(s.reply.value("warm", false), true) << i;
    EXPECT_EQ(std::regex_replace(s.out, id, "ID"), std::regex_replace(ref.out, id, "ID")) << i;
    if (i % 2 == 0) {
      // A fresh generation ID each time, bound or not.
      ASSERT_EQ(Ids(s.out, "after").size(), 1u) << s.out;
      EXPECT_TRUE(ids.insert(Ids(s.out, "after")[0]).second) << s.out;
      EXPECT_EQ(s.reply.value("generation_id", ""), IdBytes(Ids(s.out, "after")[0]));
    }
  }
}

TEST_F(Bound, ABindingIsUndoneWhenItsSnapshotIsReplacedOrItsImageRemoved) {
  const pid_t server = StartServer("64M", 1);
  EXPECT_EQ(StartOverSocket("snap1.vmsnap").reply.value("exit_status", -1), 42);
  ASSERT_TRUE(WaitImages(1));
  ASSERT_TRUE(WaitBound(server, 1));
  // The same path, other content: the guest is the new file's.
  std::filesystem::copy_file(Path("regs1.vmsnap"), Path("new.vmsnap"));
  std::filesystem::rename(Path("new.vmsnap"), Path("snap1.vmsnap"));
  Started s = StartOverSocket("snap1.vmsnap");
  EXPECT_EQ(s.reply.value("exit_status", -1), 42) << s.reply.dump() << s.out;
  EXPECT_EQ(s.reply.value("bound", true), false);
  EXPECT_NE(s.out.find("regs: after doorbell\nregs: all registers, DRs and MSRs match"), std::string::npos) << s.out;
  EXPECT_TRUE(Ids(s.out, "after").empty()) << s.out;
  // Bound to the new content once its image is built; the image removed,
  // the guest still runs as the file says (paged in).
  ASSERT_TRUE(WaitImages(2));
  ASSERT_TRUE(WaitBound(server, 1));
  for (const auto& e : std::filesystem::directory_iterator(Path("cache/vmsnap/images"))) {
    std::filesystem::remove(e.path());
  }
  s = StartOverSocket("snap1.vmsnap");
  EXPECT_EQ(s.reply.value("exit_status", -1), 42) << s.reply.dump() << s.out;
  EXPECT_EQ(s.reply.value("bound", true), false);
  EXPECT_NE(s.out.find("regs: after doorbell\nregs: all registers, DRs and MSRs match"), std::string::npos) << s.out;
}

TEST_F(Bound, AnIdleBindingIsUndoneWhenItsSnapshotIsReplacedAndItsImageLetGo) {
  const pid_t server = StartServer("64M", 2);
  // A fresh warm VM waits with its pager armed, where userfaultfd exists.
  const bool armed = UserfaultfdWorks();
  if (armed) {
    EXPECT_TRUE(WaitUntil(
        [&] {
          const std::vector<pid_t> kids = Children(server);
          return !kids.empty() && HoldsUserfaultfd(kids[0]);
        },
        std::chrono::seconds(5)))
        << "a fresh warm VM has no pager armed";
  }
  EXPECT_EQ(StartOverSocket("snap1.vmsnap").reply.value("exit_status", -1), 42);
  ASSERT_TRUE(WaitImages(1));
  ASSERT_TRUE(WaitBound(server, 1));
  std::string old_image;
  for (const auto& e : std::filesystem::directory_iterator(Path("cache/vmsnap/images"))) {
    if (e.path().extension() == ".img") old_image = e.path().string();
  }
  // Replaced while no client comes: the binding goes, and with it the old
  // image's last mapping, so that it could be removed (an image is removed
  // only under an exclusive lock, which a mapping prevents).
  std::filesystem::copy_file(Path("regs1.vmsnap"), Path("new.vmsnap"));
  std::filesystem::rename(Path("new.vmsnap"), Path("snap1.vmsnap"));
  EXPECT_TRUE(WaitUntil([&] { return MappingAnImage(server) == 0; }, std::chrono::seconds(10)))
      << "a warm VM stays bound to the replaced snapshot";
  const int fd = ::open(old_image.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << old_image;
  EXPECT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0) << "the old image is still mapped";
  ::close(fd);
  // Unbound, the VMs wait as fresh ones do.
  if (armed) {
    EXPECT_TRUE(WaitUntil(
        [&] {
          const std::vector<pid_t> kids = Children(server);
          return std::all_of(kids.begin(), kids.end(), HoldsUserfaultfd);
        },
        std::chrono::seconds(5)))
        << "a VM unbound while idle has no pager armed";
  }
  // The next start runs the new file's guest; once its image is built, the
  // pool is bound to it.
  Started s = StartOverSocket("snap1.vmsnap");
  EXPECT_EQ(s.reply.value("exit_status", -1), 42) << s.reply.dump() << s.out;
  EXPECT_NE(s.out.find("regs: all registers, DRs and MSRs match"), std::string::npos) << s.out;
  ASSERT_TRUE(WaitImages(2));
  ASSERT_TRUE(WaitBound(server, 1));
  s = StartOverSocket("snap1.vmsnap");
  EXPECT_EQ(s.reply.value("bound", false), true) << s.reply.dump();
  EXPECT_NE(s.out.find("regs: all registers, DRs and MSRs match"), std::string::npos) << s.out;
}

TEST_F(Bound, TimersRunFromTheStartNotFromTheBinding) {
  // vCPU 1 is halted with its LAPIC timer (~300 ms) running at the
  // snapshot point; its interrupt ends the guest.
  RunResult timer = Run("run " + Guest("timer.elf") +
                        " --mem 64M --vcpus 2 --snapshot-on-doorbell timer{n}.vmsnap --compress zstd:3");
  ASSERT_EQ(timer.status, 43) << timer.err;
  const pid_t server =
      Spawn({"serve", "--control", Path("pool.sock"), "--pool", "1", "--mem", "64M", "--vcpus", "2"});
  ASSERT_TRUE(WaitForSocket(Path("pool.sock")));
  EXPECT_EQ(StartOverSocket("timer1.vmsnap").reply.value("exit_status", -1), 43);
  ASSERT_TRUE(WaitImages(1));
  ASSERT_TRUE(WaitBound(server, 1));
  // Bound for far longer than the timer had left: set at the binding, it
  // would have fired while the VM waited and the guest would end at once.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const auto t0 = std::chrono::steady_clock::now();
  const Started s = StartOverSocket("timer1.vmsnap");
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  EXPECT_EQ(s.reply.value("exit_status", -1), 43) << s.reply.dump() << s.out;
  EXPECT_EQ(s.reply.value("bound", false), true) << s.reply.dump();
  EXPECT_GE(ms.count(), 100) << "the timer ran while the VM waited";
}

class Images : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ::setenv("XDG_CACHE_HOME", Path("cache").c_str(), 1);
    // The guest idles after its doorbell: the snapshot is taken, then the
    // VM is ended.
    // Compressed explicitly: the default (auto) may store every chunk raw,
    // and a raw file is mapped itself, without an image.
    Snapshot("snap.vmsnap", "run.txt");
  }
  // Another snapshot of the guest (another snapshot id, so another image).
  void Snapshot(const std::string& name, const std::string& out) {
    pid_t vm = Spawn({"run", Guest("shared.elf"), "--mem", "64M", "--serial", Path(out),
                      "--snapshot-on-doorbell", Path(name), "--compress", "zstd:3"});
    ASSERT_TRUE(WaitFor(Path(out), "sum: ")) << ReadFile(Path(out));
    ::kill(vm, SIGKILL);
    Wait(vm);
  }
  void TearDown() override {
    ::unsetenv("XDG_CACHE_HOME");
    CliTest::TearDown();
  }
  // A load of the snapshot, running until the test ends; its serial output
  // goes to `out`.
  pid_t Load(const std::string& memory, const std::string& out) {
    pid_t pid = Spawn({"load", Path("snap.vmsnap"), "--memory", memory, "--serial", Path(out)});
    EXPECT_TRUE(WaitFor(Path(out), "sum: 00000000007ff800\n")) << ReadFile(Path(out)) << ReadFile(Path("run.txt"));
    return pid;
  }
  // A one-VM server for 64 MiB guests that pages every snapshot in (it
  // builds no image), once its socket is up; -1 if it never is.
  pid_t PagingServer(const std::string& socket) {
    const pid_t pid = Spawn({"serve", "--control", Path(socket), "--pool", "1", "--mem", "64M", "--no-image-build"});
    return WaitForSocket(Path(socket)) ? pid : -1;
  }
  // Whether the page holding guest-physical `gpa` is in memory in `pid`,
  // whose guest memory is its one anonymous mapping of 64 MiB or more
  // (/proc/PID/pagemap's present bit).
  static bool GuestPagePresent(pid_t pid, uint64_t gpa) {
    std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
    uint64_t base = 0;
    for (std::string line; std::getline(maps, line);) {
      std::istringstream ls(line);
      std::string range, perms, offset, dev, inode, path;
      ls >> range >> perms >> offset >> dev >> inode >> path;
      const size_t dash = range.find('-');
      const uint64_t start = std::stoull(range.substr(0, dash), nullptr, 16);
      const uint64_t end = std::stoull(range.substr(dash + 1), nullptr, 16);
      if (path.empty() && end - start >= (uint64_t(64) << 20)) base = start;
    }
    if (base == 0) return false;
    UniqueFd pm(::open(("/proc/" + std::to_string(pid) + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC));
    uint64_t entry = 0;
    if (!pm.valid() || ::pread(pm.get(), &entry, sizeof entry, off_t((base + gpa) / 4096 * 8)) != ssize_t(sizeof entry)) {
      return false;
    }
    return (entry >> 63) != 0;
  }
  // The guest-physical address of vCPU 0's register `reg` (rip or rsp) in
  // the snapshot, plus `delta`, translated through its page tables.
  uint64_t Vcpu0Gpa(const std::string& snapshot, const std::string& reg, int64_t delta) {
    RunResult j = Run("inspect --json " + snapshot);
    EXPECT_EQ(j.status, 0) << j.err;
    const uint64_t gva =
        std::stoull(nlohmann::json::parse(j.out)["vcpus"][0]["regs"][reg].get<std::string>(), nullptr, 16) + delta;
    RunResult t = Run("translate --json " + snapshot + " --gva " + std::to_string(gva));
    EXPECT_EQ(t.status, 0) << t.err;
    return std::stoull(nlohmann::json::parse(t.out)["gpa"].get<std::string>(), nullptr, 16);
  }
  // Resident and proportional memory (KiB) of `pid`'s mappings of an image.
  struct Use {
    long rss = 0, pss = 0;
  };
  static Use ImageUse(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
    Use u;
    bool image = false;
    for (std::string line; std::getline(in, line);) {
      std::istringstream ls(line);
      std::string first;
      ls >> first;
      if (first.find('-') != std::string::npos && first.back() != ':') {
        image = line.find(".img") != std::string::npos;
        continue;
      }
      long v = 0;
      ls >> v;
      if (image && first == "Rss:") u.rss += v;
      if (image && first == "Pss:") u.pss += v;
    }
    return u;
  }
  // Starts the snapshot `snap` through the server at `sock` and waits until
  // its guest has read its memory (it then idles): `*client` is the still
  // running `load --via`.
  void StartVia(const std::string& sock, const std::string& snap, const std::string& out, pid_t* client) {
    *client = Spawn({"load", "--via", Path(sock), Path(snap), "--serial", Path(out)});
    ASSERT_TRUE(WaitFor(Path(out), "sum: 00000000007ff800\n")) << ReadFile(Path(out));
  }
  // Resident KiB of `pid`'s guest memory: its anonymous mappings of 64 MiB
  // or more (the servers here keep 64 MiB VMs; nothing else is that large).
  static long GuestRss(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
    long rss = 0;
    bool guest = false;
    for (std::string line; std::getline(in, line);) {
      std::istringstream ls(line);
      std::string first;
      ls >> first;
      if (first.find('-') != std::string::npos && first.back() != ':') {
        std::string perms, offset, dev, inode, path;
        ls >> perms >> offset >> dev >> inode >> path;
        const size_t dash = first.find('-');
        const uint64_t start = std::stoull(first.substr(0, dash), nullptr, 16);
        const uint64_t end = std::stoull(first.substr(dash + 1), nullptr, 16);
        guest = path.empty() && end - start >= (uint64_t(64) << 20);
        continue;
      }
      long v = 0;
      ls >> v;
      if (guest && first == "Rss:") rss += v;
    }
    return rss;
  }
  // The most any warm VM of `server` (its children) maps of an image.
  static Use MappedByAWorker(pid_t server) {
    Use most;
    for (pid_t k : Children(server)) {
      const Use u = ImageUse(k);
      if (u.rss > most.rss) most = u;
    }
    return most;
  }
  // Whether an image with its stamp is there, within `limit`.
  bool WaitForImage(std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    for (;;) {
      const std::string img = Image();
      if (!img.empty() && std::filesystem::exists(img.substr(0, img.size() - 4) + ".stamp")) return true;
      if (std::chrono::steady_clock::now() >= end) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  // The images there, by snapshot id.
  std::set<std::string> ImageIds() {
    std::set<std::string> ids;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(Path("cache/vmsnap/images"), ec)) {
      if (e.path().extension() == ".img") ids.insert(e.path().stem().string());
    }
    return ids;
  }
  std::string Id(const std::string& snapshot) {
    RunResult r = Run("inspect --json " + snapshot);
    return nlohmann::json::parse(r.out, nullptr, false).value("id", "");
  }
  std::string Image() {
    std::error_code ec;
    if (!std::filesystem::is_directory(Path("cache/vmsnap/images"), ec)) return "";
    for (const auto& e : std::filesystem::directory_iterator(Path("cache/vmsnap/images"))) {
      if (e.path().extension() == ".img") return e.path().string();
    }
    return "";
  }
};

TEST_F(Images, LoadsOfACompressedSnapshotShareItsPagesThroughTheImage) {
  // Without an image, each pager fills private memory: nothing shared.
  pid_t a = Load("lazy", "a.txt");
  pid_t b = Load("lazy", "b.txt");
  EXPECT_EQ(ImageUse(b).rss, 0) << "paged in privately";
  ::kill(a, SIGKILL);
  ::kill(b, SIGKILL);
  Wait(a);
  Wait(b);
  // The first shared load builds the image; both map it.
  pid_t c = Load("shared", "c.txt");
  ASSERT_FALSE(Image().empty());
  pid_t d = Load("lazy", "d.txt");  // a fresh image is used by any lazy load
  // The 16 MiB the guests read are the same page-cache pages in both: each
  // process's proportional share is about half of what it maps.
  for (pid_t p : {c, d}) {
    const Use u = ImageUse(p);
    EXPECT_GE(u.rss, 16 * 1024) << p;
    EXPECT_LE(u.pss * 10, u.rss * 6) << p << ": rss " << u.rss << " KiB, pss " << u.pss << " KiB";
  }
}

TEST_F(Images, WarmStartsMapTheImageTheServerBuilds) {
  // Told not to build images, the server's VMs page the snapshot in.
  const pid_t plain = PagingServer("plain.sock");
  ASSERT_GT(plain, 0) << "no socket";
  pid_t a = -1;
  ASSERT_NO_FATAL_FAILURE(StartVia("plain.sock", "snap.vmsnap", "a.txt", &a));
  EXPECT_EQ(MappedByAWorker(plain).rss, 0) << "paged in privately";
  ::kill(a, SIGKILL);
  Wait(a);
  ::kill(plain, SIGTERM);
  EXPECT_EQ(Wait(plain), 0);
  EXPECT_EQ(Image(), "") << "built with --no-image-build";

  // By default the first warm start has the server build the image, in the
  // background; the starts after it map it.
  const pid_t server = Spawn({"serve", "--control", Path("pool.sock"), "--pool", "1", "--mem", "64M"});
  ASSERT_TRUE(WaitForSocket(Path("pool.sock")));
  pid_t b = -1;
  ASSERT_NO_FATAL_FAILURE(StartVia("pool.sock", "snap.vmsnap", "b.txt", &b));
  ASSERT_TRUE(WaitForImage(std::chrono::seconds(60))) << "no image built";
  ::kill(b, SIGKILL);
  Wait(b);
  pid_t c = -1;
  ASSERT_NO_FATAL_FAILURE(StartVia("pool.sock", "snap.vmsnap", "c.txt", &c));
  // The 16 MiB the guest read came from the image.
  EXPECT_GE(MappedByAWorker(server).rss, 16 * 1024);
  ::kill(c, SIGKILL);
  Wait(c);
}

TEST_F(Images, AWarmVmBindsToASnapshotItPagesInAndHoldsOnlyWhatItsRestoreTouched) {
  const pid_t server = PagingServer("pool.sock");
  ASSERT_GT(server, 0) << "no socket";
  // The first start is unbound; the warm VM that replaces it binds to the
  // snapshot, paged in: its restore touched the generation ID's page.
  pid_t a = -1;
  ASSERT_NO_FATAL_FAILURE(StartVia("pool.sock", "snap.vmsnap", "a.txt", &a));
  ::kill(a, SIGKILL);
  Wait(a);
  pid_t bound = -1;
  const bool found = WaitUntil(
      [&] {
        for (pid_t k : Children(server)) {
          const long rss = GuestRss(k);
          if (rss > 0 && rss <= 1024) bound = k;
        }
        return bound > 0;
      },
      std::chrono::seconds(30));
  ASSERT_TRUE(found) << "no idle warm VM bound to the snapshot";
  // Its fill is held: well past the pager's first faults' window it holds
  // a few pages, not the 16 MiB the guest reads.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_LE(GuestRss(bound), 1024) << "KiB held by the idle bound VM";
  // Among them, the pages its guest's first instruction needs: its code
  // and the top of its stack. A page the guest reads later is not.
  const uint64_t code = Vcpu0Gpa("snap.vmsnap", "rip", 0), stack = Vcpu0Gpa("snap.vmsnap", "rsp", -8);
  EXPECT_TRUE(GuestPagePresent(bound, code)) << "the guest's code page, gpa " << std::hex << code;
  EXPECT_TRUE(GuestPagePresent(bound, stack)) << "the guest's stack page, gpa " << std::hex << stack;
  EXPECT_FALSE(GuestPagePresent(bound, 24 << 20)) << "a page the guest only reads later";
  // The next start runs in that VM, to the same result.
  pid_t b = -1;
  ASSERT_NO_FATAL_FAILURE(StartVia("pool.sock", "snap.vmsnap", "b.txt", &b));
  EXPECT_GE(GuestRss(bound), 16 * 1024) << "the start did not run in the bound VM";
  ::kill(b, SIGKILL);
  Wait(b);
}

TEST_F(Images, TheServerKeepsItsImagesWithinTheirBoundButNeverRemovesOneInUse) {
  Snapshot("two.vmsnap", "run2.txt");
  Snapshot("three.vmsnap", "run3.txt");
  const std::string one = Id("snap.vmsnap"), two = Id("two.vmsnap"), three = Id("three.vmsnap");
  ASSERT_EQ(std::set<std::string>({one, two, three}).size(), 3u);
  // The first image, built by a shared load whose VM goes on mapping it.
  const pid_t a = Load("shared", "a.txt");
  ASSERT_EQ(ImageIds(), std::set<std::string>({one}));
  struct stat st {};
  ASSERT_EQ(::stat(Image().c_str(), &st), 0);
  // Room for two and a half images.
  const uint64_t bound = uint64_t(st.st_blocks) * 512 * 5 / 2;
  const pid_t server = Spawn({"serve", "--control", Path("pool.sock"), "--pool", "1", "--mem", "64M",
                              "--image-cache-size", std::to_string(bound)});
  ASSERT_TRUE(WaitForSocket(Path("pool.sock")));
  int starts = 0;
  auto start = [&](const std::string& snap, const std::string& id) {
    const std::string out = "start" + std::to_string(++starts) + ".txt";
    const pid_t c = Spawn({"load", "--via", Path("pool.sock"), Path(snap), "--serial", Path(out)});
    EXPECT_TRUE(WaitFor(Path(out), "sum: 00000000007ff800\n")) << ReadFile(Path(out));
    ::kill(c, SIGKILL);
    Wait(c);
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!std::filesystem::exists(Path("cache/vmsnap/images/" + id + ".stamp")) &&
           std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    // The server trims once the build has ended.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  };
  start("two.vmsnap", two);
  EXPECT_EQ(ImageIds(), std::set<std::string>({one, two}));
  // A third is over the bound: the least recently used one still maps,
  // so the next goes.
  start("three.vmsnap", three);
  EXPECT_EQ(ImageIds(), std::set<std::string>({one, three})) << "the image in use was removed, or none was";
  // Unmapped, the first is the least recently used: it goes when the
  // second comes back.
  ::kill(a, SIGKILL);
  Wait(a);
  start("two.vmsnap", two);
  EXPECT_EQ(ImageIds(), std::set<std::string>({two, three}));
  ::kill(server, SIGTERM);
  EXPECT_EQ(Wait(server), 0);
  // A bound needs images to bound.
  RunResult bad = Run("serve --control x.sock --pool 1 --no-image-build --image-cache-size 1G");
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.err.find("--image-cache-size"), std::string::npos) << bad.err;
}

// Images are a cache: they never take the last tenth of their filesystem.
// A build that would is refused before it writes anything (a shared load
// says so in one line), and a server makes room by removing the least
// recently used image that no VM maps, having its idle warm VMs let go of
// the images they are bound to first.
TEST_F(Images, ImagesNeverTakeTheLastTenthOfTheirFilesystem) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a small filesystem for the images needs root";
  Snapshot("two.vmsnap", "run2.txt");
  const std::string one = Id("snap.vmsnap"), two = Id("two.vmsnap");
  // An image takes its snapshot's stored pages (raw_bytes), and its stamp a
  // page. A filesystem with room for both images and both stamps, plus a
  // twentieth of the images: the second fits in what is free, but not
  // without taking part of the tenth kept free.
  auto raw = [&](const std::string& snap) {
    return nlohmann::json::parse(Run("inspect --json " + snap).out, nullptr, false)["memory"].value("raw_bytes", 0ull);
  };
  const uint64_t b1 = raw("snap.vmsnap"), b2 = raw("two.vmsnap");
  ASSERT_GT(b1, 0u);
  ASSERT_GT(b2, 0u);
  const uint64_t size = (b1 + b2 + 2 * 4096 + (b1 + b2) / 20 + 4095) / 4096 * 4096;
  // Mounted in a namespace of this test's process and its children only.
  const std::string dir = Path("cache/vmsnap/images");
  std::filesystem::create_directories(dir);
  ASSERT_EQ(::unshare(CLONE_NEWNS), 0) << std::strerror(errno);
  ASSERT_EQ(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), 0) << std::strerror(errno);
  ASSERT_EQ(::mount("tmpfs", dir.c_str(), "tmpfs", 0, ("size=" + std::to_string(size)).c_str()), 0)
      << std::strerror(errno);
  struct Unmount {
    std::string dir;
    ~Unmount() { ::umount2(dir.c_str(), MNT_DETACH); }
  } unmount{dir};
  const pid_t a = Load("shared", "a2.txt");
  ASSERT_EQ(ImageIds(), std::set<std::string>({one}));
  RunResult refused = Run("load " + Path("two.vmsnap") + " --memory shared --serial " + Path("b.txt"));
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.err.find("two.vmsnap: it needs"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("tenth of its filesystem kept free"), std::string::npos) << refused.err;
  EXPECT_EQ(std::count(refused.err.begin(), refused.err.end(), '\n'), 1) << refused.err;
  std::set<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files.insert(e.path().filename().string());
  EXPECT_EQ(files, std::set<std::string>({one + ".img", one + ".stamp"})) << "the refused build wrote something";
  // The first image no longer mapped, a server's build of the second
  // removes it to make room.
  ::kill(a, SIGKILL);
  Wait(a);
  const pid_t server = Spawn({"serve", "--control", Path("pool.sock"), "--pool", "2", "--mem", "64M"});
  ASSERT_TRUE(WaitForSocket(Path("pool.sock")));
  auto start = [&](const std::string& snap, const std::string& id, const std::string& out) {
    const pid_t c = Spawn({"load", "--via", Path("pool.sock"), Path(snap), "--serial", Path(out)});
    EXPECT_TRUE(WaitFor(Path(out), "sum: 00000000007ff800\n")) << ReadFile(Path(out));
    ::kill(c, SIGKILL);
    Wait(c);
    // Built at the lowest CPU priority: slow on a busy machine.
    EXPECT_TRUE(WaitUntil([&] { return std::filesystem::exists(dir + "/" + id + ".stamp"); },
                          std::chrono::seconds(60)))
        << "no image of " << snap;
  };
  start("two.vmsnap", two, "c.txt");
  EXPECT_EQ(ImageIds(), std::set<std::string>({two}));
  // An idle warm VM binds to the second image, which is then in the way of
  // the first's: it lets go of it, and the first is built in its place.
  ASSERT_TRUE(WaitUntil([&] { return MappingAnImage(server) == 1; }, std::chrono::seconds(60)));
  start("snap.vmsnap", one, "d.txt");
  EXPECT_EQ(ImageIds(), std::set<std::string>({one}));
  ::kill(server, SIGTERM);
  EXPECT_EQ(Wait(server), 0);
}

// A server stopped while it builds an image ends the build and leaves none
// of its unfinished files. The build is held still (SIGSTOP) as soon as its
// file appears, so that the stop finds it half-way.
TEST_F(Images, AServerStoppedMidBuildLeavesNoUnfinishedFiles) {
  const pid_t server = Spawn({"serve", "--control", Path("pool.sock"), "--pool", "1", "--mem", "64M"});
  ASSERT_TRUE(WaitForSocket(Path("pool.sock")));
  const pid_t c = Spawn({"load", "--via", Path("pool.sock"), Path("snap.vmsnap"), "--serial", Path("c.txt")});
  const std::string dir = Path("cache/vmsnap/images");
  // Unfinished files: the image's "ID.img.tmp-PID", the stamp's
  // "ID.stamp.tmp-PID.N".
  auto unfinished = [&] {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      const std::string n = e.path().filename().string();
      if (n.find(".tmp-") != std::string::npos) names.push_back(n);
    }
    return names;
  };
  pid_t builder = -1;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (builder < 0 && std::chrono::steady_clock::now() < end) {
    for (const std::string& n : unfinished()) {
      const size_t at = n.find(".img.tmp-");
      if (at == std::string::npos) continue;
      builder = pid_t(std::stol(n.substr(at + 9)));
      ::kill(builder, SIGSTOP);
    }
  }
  ASSERT_GT(builder, 0) << "no image build seen";
  ASSERT_FALSE(unfinished().empty()) << "the build finished before it could be held";
  ::kill(server, SIGTERM);
  EXPECT_EQ(Wait(server), 0);
  const std::vector<std::string> left = unfinished();
  EXPECT_TRUE(left.empty()) << "left: " << left[0];
  ::kill(c, SIGKILL);
  Wait(c);
}

TEST_F(Images, AWarmVmBoundToASnapshotWithACorruptChunkNeitherHangsNorStopsTheServer) {
  // Another snapshot, good, for after.
  Snapshot("good.vmsnap", "good-run.txt");
  // Chunk 1 holds gpa 1-2 MiB: the guest's code and the top of its stack.
  {
    auto r = SnapshotReader::Open(Path("snap.vmsnap"));
    ASSERT_TRUE(r.ok()) << r.status().message();
    ASSERT_GT(r.value()->chunk_index()[1].stored_length, 0u);
    std::fstream f(Path("snap.vmsnap"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(std::streamoff(r.value()->chunk_index()[1].file_offset));
    const char c = char(f.get());
    f.seekp(std::streamoff(r.value()->chunk_index()[1].file_offset));
    f.put(char(c ^ 0xff));
  }
  const pid_t server = PagingServer("pool.sock");
  ASSERT_GT(server, 0) << "no socket";
  // Unbound, then (the warm VM that replaces it is bound to the snapshot,
  // or tried to be) bound: each start fails, naming the chunk. A bound VM's
  // pager brings in the pages its guest resumes on while it waits, those of
  // that chunk among them: it must report the chunk, never wait for a page
  // it will not serve.
  for (const char* start : {"first", "second"}) {
    RunResult r = Run("load --via pool.sock snap.vmsnap --serial /dev/null", 30);
    EXPECT_NE(r.status, 0) << start;
    EXPECT_NE(r.status, 124) << start << " start hung";
    EXPECT_NE(r.err.find("chunk 1"), std::string::npos) << start << ": " << r.err;
    // Time for the refill to bind.
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  // The server still serves.
  pid_t good = -1;
  ASSERT_NO_FATAL_FAILURE(StartVia("pool.sock", "good.vmsnap", "good.txt", &good));
  ::kill(good, SIGKILL);
  Wait(good);
  ::kill(server, SIGTERM);
  EXPECT_EQ(Wait(server), 0);
}

TEST_F(Images, AnImageChangedAfterItWasBuiltIsNeverMapped) {
  pid_t c = Load("shared", "c.txt");
  ::kill(c, SIGKILL);
  Wait(c);
  const std::string img = Image();
  ASSERT_FALSE(img.empty());
  // Corrupt the first pattern page (at 16 MiB: the regions start at 0).
  {
    std::fstream f(img, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0x1000000 + 2048);
    const char junk[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    f.write(junk, sizeof junk);
  }
  // A lazy load does not map the stale image: the pager serves the right
  // page. A shared load rebuilds the image first.
  pid_t d = Load("lazy", "d.txt");
  EXPECT_EQ(ImageUse(d).rss, 0) << "the stale image was mapped";
  pid_t e = Load("shared", "e.txt");
  std::ifstream in(img, std::ios::binary);
  in.seekg(0x1000000 + 2048);
  char now[8] = {};
  in.read(now, sizeof now);
  EXPECT_EQ(std::string(now, 8), std::string(8, '\0')) << "the image was rebuilt";
  (void)e;
}

}  // namespace
}  // namespace vmsnap::testing
