// SPDX-License-Identifier: MIT
// `--compress` end to end on real KVM: what `save`, `run`/`load` doorbell
// snapshots and `flatten` store for each spec, that raw snapshots load and
// chains flatten to the same memory, and how bad specs are refused.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "format/reader.h"
#include "tests/cli_fixture.h"
#include "vmm/control.h"

namespace vmsnap {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

std::string Guest(const std::string& name) { return std::string(VMSNAP_GUEST_DIR) + "/" + name + ".elf"; }
std::string DirtyGuest(const std::string& name) {
  return std::string(VMSNAP_DIRTY_GUEST_DIR) + "/" + name + ".elf";
}

using testing::CliTest;
using testing::ReadFile;
using testing::RunResult;

class CompressCli : public CliTest {
 protected:
  json Inspect(const std::string& file) {
    RunResult r = Run("inspect --json " + file);
    EXPECT_EQ(r.status, 0) << r.err;
    json j = json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }
};

// raw: every chunk of `file` is stored raw at a page-aligned offset
// (mappable). Else chunks are zstd frames (the writer keeps a chunk raw only
// where zstd would not shrink it, so at least one must be compressed here:
// the guests' pages are mostly zeros and code).
void ExpectChunks(const std::string& file, bool raw) {
  auto r = SnapshotReader::Open(file);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_FALSE((*r)->chunk_index().empty()) << file;
  size_t compressed = 0;
  for (const ChunkInfo& c : (*r)->chunk_index()) {
    compressed += c.compressed;
    if (raw) {
      EXPECT_FALSE(c.compressed) << file << " chunk at gpa 0x" << std::hex << c.gpa;
      EXPECT_EQ(c.file_offset % 4096, 0u) << file << " raw chunk at gpa 0x" << std::hex << c.gpa;
      EXPECT_EQ(c.stored_length, c.raw_length) << file;
    }
  }
  if (!raw) {
    EXPECT_GT(compressed, 0u) << file << " has no zstd chunk";
  }
}

// An auto snapshot: whatever each chunk's codec, raw chunks sit page-aligned
// in the file (mappable) and store their pages exactly.
void ExpectAutoChunks(const std::string& file) {
  auto r = SnapshotReader::Open(file);
  ASSERT_TRUE(r.ok()) << r.status().message();
  ASSERT_FALSE((*r)->chunk_index().empty()) << file;
  for (const ChunkInfo& c : (*r)->chunk_index()) {
    if (c.compressed || c.raw_length == 0) continue;
    EXPECT_EQ(c.file_offset % 4096, 0u) << file << " raw chunk at gpa 0x" << std::hex << c.gpa;
    EXPECT_EQ(c.stored_length, c.raw_length) << file;
  }
}

// What a raw snapshot's inspect says: compression none and one page of file
// per present page.
void ExpectRawFigures(const json& j, const std::string& what) {
  EXPECT_EQ(j["save"]["compression"], "none") << what;
  uint64_t present = j["memory"]["present_pages"].get<uint64_t>();
  EXPECT_GT(present, 0u) << what;
  EXPECT_EQ(j["memory"]["stored_bytes"].get<uint64_t>(), present * 4096) << what;
}

// (a) save --compress none: a raw snapshot that loads and ends as the
// uninterrupted run does.
TEST_F(CompressCli, SaveNoneStoresRawPagesAndLoadsToTheSameEnd) {
  RunResult full = Run("run " + Guest("spin") + " --mem 32M --serial full.txt");
  ASSERT_EQ(full.status, 46) << full.err;
  const std::string uninterrupted = ReadFile(Path("full.txt"));
  ASSERT_NE(uninterrupted.find("spin: done"), std::string::npos) << uninterrupted;

  pid_t vm = Spawn({"run", Guest("spin"), "--mem", "32M", "--serial", "run.txt", "--control", Path("ctl")});
  ASSERT_TRUE(WaitForSocket(Path("ctl")));
  ASSERT_TRUE(WaitFor(Path("run.txt"), "tick group")) << "save mid-run";
  RunResult save = Run("save --control ctl --compress none --stop raw.vmsnap");
  ASSERT_EQ(save.status, 0) << save.err;
  EXPECT_EQ(Wait(vm), 0);

  json j = Inspect("raw.vmsnap");
  ExpectRawFigures(j, "raw.vmsnap");
  ExpectChunks(Path("raw.vmsnap"), /*raw=*/true);
  EXPECT_EQ(Run("verify raw.vmsnap").status, 0);

  for (const char* memory : {"lazy", "eager"}) {
    SCOPED_TRACE(memory);
    RunResult load = Run("load raw.vmsnap --memory " + std::string(memory) + " --serial load.txt");
    EXPECT_EQ(load.status, 46) << load.err;
    std::string after = ReadFile(Path("load.txt"));
    ASSERT_FALSE(after.empty());
    ASSERT_LT(after.size(), uninterrupted.size()) << "the load should resume mid-run";
    EXPECT_EQ(uninterrupted.substr(uninterrupted.size() - after.size()), after)
        << "load output is not the uninterrupted run's tail";
    // save --stop ends the VM at the snapshot point: what it printed before
    // and what the loaded VM prints are the uninterrupted run, nothing twice.
    EXPECT_EQ(ReadFile(Path("run.txt")) + after, uninterrupted)
        << "the VM ran on after save --stop, or the load repeated output";
  }
}

// The default codec is auto: a save without --compress records "auto",
// verifies, holds the memory its raw copy holds, and loads, eagerly and
// lazily, to the uninterrupted run's end.
TEST_F(CompressCli, DefaultAutoSaveEqualsARawSaveAndLoads) {
  RunResult full = Run("run " + Guest("spin") + " --mem 32M --serial full.txt");
  ASSERT_EQ(full.status, 46) << full.err;
  const std::string uninterrupted = ReadFile(Path("full.txt"));

  pid_t vm = Spawn({"run", Guest("spin"), "--mem", "32M", "--serial", "run.txt", "--control", Path("ctl")});
  ASSERT_TRUE(WaitForSocket(Path("ctl")));
  ASSERT_TRUE(WaitFor(Path("run.txt"), "tick group")) << "save mid-run";
  RunResult save = Run("save --control ctl --stop auto.vmsnap");
  ASSERT_EQ(save.status, 0) << save.err;
  EXPECT_EQ(Wait(vm), 0);
  EXPECT_EQ(Inspect("auto.vmsnap")["save"]["compression"], "auto");
  ExpectAutoChunks(Path("auto.vmsnap"));
  EXPECT_EQ(Run("verify auto.vmsnap").status, 0);
  ASSERT_EQ(Run("flatten auto.vmsnap --compress none -o none.vmsnap").status, 0);
  ExpectChunks(Path("none.vmsnap"), /*raw=*/true);
  RunResult d = Run("diff --json auto.vmsnap none.vmsnap");
  EXPECT_EQ(d.status, 0) << d.out << d.err;

  for (const char* memory : {"lazy", "eager"}) {
    SCOPED_TRACE(memory);
    RunResult load = Run("load auto.vmsnap --memory " + std::string(memory) + " --serial load.txt");
    EXPECT_EQ(load.status, 46) << load.err;
    EXPECT_EQ(ReadFile(Path("run.txt")) + ReadFile(Path("load.txt")), uninterrupted)
        << "an auto snapshot did not resume where the save stopped";
  }
}

// A save asked for progress streams {"progress":{"done","total"}} lines
// before its reply (what `vmsnap save` draws its bar from on a terminal);
// one not asked gets none.
TEST_F(CompressCli, SaveStreamsProgressBeforeTheReplyOnlyWhenAsked) {
  Spawn({"run", DirtyGuest("live_checksum"), "--mem", "256M", "--serial", "run.txt", "--control", Path("ctl")});
  ASSERT_TRUE(WaitFor(Path("run.txt"), "verified"));
  std::vector<json> progress;
  auto reply = vmm::ControlRequest(Path("ctl"), json{{"cmd", "save"}, {"path", Path("p.vmsnap")}, {"progress", true}},
                                   [&](const json& p) { progress.push_back(p); });
  ASSERT_TRUE(reply.ok()) << reply.status().message();
  EXPECT_EQ((*reply)["ok"], true) << reply->dump();
  ASSERT_FALSE(progress.empty());
  uint64_t prev = 0;
  for (const json& p : progress) {
    const uint64_t done = p["done"].get<uint64_t>(), total = p["total"].get<uint64_t>();
    EXPECT_EQ(total, 256ull << 20) << p.dump();
    EXPECT_GE(done, prev) << p.dump();
    EXPECT_LE(done, total) << p.dump();
    prev = done;
  }
  EXPECT_EQ(prev, 256ull << 20) << "the last progress line is not the whole memory";

  std::vector<json> unasked;
  auto quiet = vmm::ControlRequest(Path("ctl"), json{{"cmd", "save"}, {"path", Path("q.vmsnap")}},
                                   [&](const json& p) { unasked.push_back(p); });
  ASSERT_TRUE(quiet.ok()) << quiet.status().message();
  EXPECT_EQ((*quiet)["ok"], true);
  EXPECT_TRUE(unasked.empty());
  // Not on a terminal, `vmsnap save` asks for none and prints its one line.
  RunResult save = Run("save --control ctl --stop r.vmsnap");
  EXPECT_EQ(save.status, 0) << save.err;
  EXPECT_EQ(save.out.rfind("saved ", 0), 0u) << save.out;
  EXPECT_EQ(Run("verify p.vmsnap").status, 0);
}

// (b) Per-save levels on one VM: the VMM's --compress is the default of a save
// without --compress, and each save records what it used.
TEST_F(CompressCli, EachSaveRecordsItsLevelAndTheVmmsIsTheDefault) {
  pid_t vm = Spawn({"run", DirtyGuest("live_checksum"), "--mem", "32M", "--serial", "run.txt", "--control",
                    Path("ctl"), "--compress", "zstd:-5"});
  ASSERT_TRUE(WaitFor(Path("run.txt"), "verified"));
  ASSERT_EQ(Run("save --control ctl dflt.vmsnap").status, 0);
  ASSERT_EQ(Run("save --control ctl --compress zstd:19 hi.vmsnap").status, 0);

  // The protocol itself refuses a bad "compress" and names it; the VM runs on.
  auto bad = vmm::ControlRequest(Path("ctl"), json{{"cmd", "save"}, {"path", Path("x.vmsnap")}, {"compress", "lz4"}});
  ASSERT_TRUE(bad.ok()) << bad.status().message();
  EXPECT_EQ((*bad)["ok"], false);
  EXPECT_NE((*bad)["error"].get<std::string>().find("'lz4'"), std::string::npos) << bad->dump();
  auto nonstring = vmm::ControlRequest(Path("ctl"), json{{"cmd", "save"}, {"path", Path("x.vmsnap")}, {"compress", 5}});
  ASSERT_TRUE(nonstring.ok());
  EXPECT_EQ((*nonstring)["ok"], false);
  EXPECT_NE((*nonstring)["error"].get<std::string>().find("compress"), std::string::npos) << nonstring->dump();
  EXPECT_FALSE(fs::exists(Path("x.vmsnap")));

  RunResult lo = Run("save --control ctl --compress zstd:1 --stop lo.vmsnap");
  ASSERT_EQ(lo.status, 0) << lo.err;
  EXPECT_EQ(Wait(vm), 0);

  for (auto [file, text] : {std::pair{"dflt.vmsnap", "zstd:-5"}, {"hi.vmsnap", "zstd:19"}, {"lo.vmsnap", "zstd:1"}}) {
    RunResult v = Run(std::string("verify ") + file);
    EXPECT_EQ(v.status, 0) << file << ": " << v.err;
    EXPECT_EQ(Inspect(file)["save"]["compression"], text) << file;
    ExpectChunks(Path(file), /*raw=*/false);
  }
}

// (c) and (e): doorbell snapshots follow `run --compress`; flatten --compress
// none turns a zstd chain into raw chunks holding the same memory.
TEST_F(CompressCli, DoorbellSnapshotsAndFlattenFollowCompress) {
  RunResult raw = Run("run " + DirtyGuest("incr_rounds") +
                      " --mem 32M --compress none --snapshot-on-doorbell 'raw-{n}.vmsnap' --serial /dev/null");
  ASSERT_EQ(raw.status, 0) << raw.err;
  for (const char* f : {"raw-1.vmsnap", "raw-5.vmsnap"}) {
    ExpectRawFigures(Inspect(f), f);
    ExpectChunks(Path(f), /*raw=*/true);
  }
  // Without --compress, flatten keeps an all-raw snapshot raw.
  ASSERT_EQ(Run("flatten raw-5.vmsnap -o raw-copy.vmsnap").status, 0);
  ExpectChunks(Path("raw-copy.vmsnap"), /*raw=*/true);

  RunResult inc = Run("run " + DirtyGuest("incr_rounds") +
                      " --mem 32M --snapshot-on-doorbell 'z-{n}.vmsnap' --incremental --serial /dev/null");
  ASSERT_EQ(inc.status, 0) << inc.err;
  EXPECT_EQ(Inspect("z-5.vmsnap")["save"]["compression"], "auto") << "auto is the default";
  ExpectAutoChunks(Path("z-5.vmsnap"));
  // The guest is deterministic: at its fifth doorbell its memory is the
  // same, whether auto (incrementally) or none stored it, but for the page
  // holding the VM generation ID (0x1f00), which each run makes afresh.
  RunResult same = Run("diff --json raw-5.vmsnap z-5.vmsnap");
  json sj = json::parse(same.out, nullptr, false);
  ASSERT_FALSE(sj.is_discarded()) << same.out << same.err;
  EXPECT_LE(sj["memory"]["differing_pages"].get<uint64_t>(), 1u) << same.out;
  for (const json& range : sj["memory"]["ranges"]) {
    EXPECT_EQ(range["start"], "0x1000") << same.out;
    EXPECT_EQ(range["end"], "0x2000") << same.out;
  }

  RunResult flat = Run("flatten z-5.vmsnap --compress none -o flat.vmsnap");
  ASSERT_EQ(flat.status, 0) << flat.err;
  json j = Inspect("flat.vmsnap");
  EXPECT_TRUE(j["parent"].is_null());
  ExpectRawFigures(j, "flat.vmsnap");
  ExpectChunks(Path("flat.vmsnap"), /*raw=*/true);
  RunResult d = Run("diff --json z-5.vmsnap flat.vmsnap");
  EXPECT_EQ(d.status, 0) << d.out << d.err;
  json dj = json::parse(d.out, nullptr, false);
  ASSERT_FALSE(dj.is_discarded()) << d.out;
  EXPECT_EQ(dj["memory"]["differing_pages"], 0);

  ASSERT_EQ(Run("flatten z-5.vmsnap --compress zstd -o flat-z.vmsnap").status, 0);
  EXPECT_EQ(Inspect("flat-z.vmsnap")["save"]["compression"], "zstd:3");
  ExpectChunks(Path("flat-z.vmsnap"), /*raw=*/false);
  // Without --compress, a snapshot that is not all raw flattens with auto.
  ASSERT_EQ(Run("flatten flat-z.vmsnap -o flat-auto.vmsnap").status, 0);
  EXPECT_EQ(Inspect("flat-auto.vmsnap")["save"]["compression"], "auto");
  ExpectAutoChunks(Path("flat-auto.vmsnap"));
  EXPECT_EQ(Run("diff flat-auto.vmsnap flat.vmsnap").status, 0);
  ASSERT_EQ(Run("flatten z-5.vmsnap --compress zstd:-3 -o flat-fast.vmsnap").status, 0);
  EXPECT_EQ(Inspect("flat-fast.vmsnap")["save"]["compression"], "zstd:-3");
  EXPECT_EQ(Run("diff flat-fast.vmsnap flat.vmsnap").status, 0);
}

// (d) A bad spec is a usage error: one line naming it, status 2 for save and
// flatten, 125 for run and load (as for their other bad option values), and
// nothing is started, contacted or written.
TEST_F(CompressCli, BadSpecsAreOneLineUsageErrors) {
  struct Case {
    std::string args;
    std::string spec;
    int status;
  };
  const std::vector<Case> cases = {
      {"save --control nobody.sock out.vmsnap --compress lz4", "lz4", 2},
      {"save --control nobody.sock out.vmsnap --compress zstd:", "zstd:", 2},
      {"flatten missing.vmsnap -o out.vmsnap --compress zstd:3x", "zstd:3x", 2},
      {"flatten missing.vmsnap -o out.vmsnap --compress ZSTD:99", "ZSTD:99", 2},
      {"run " + Guest("spin") + " --mem 32M --compress zstd:23", "zstd:23", 125},
      {"load missing.vmsnap --compress zstd:-999999", "zstd:-999999", 125},
  };
  for (const Case& c : cases) {
    RunResult r = Run(c.args);
    EXPECT_EQ(r.status, c.status) << c.args << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.args << ": " << r.err;
    EXPECT_NE(r.err.find("--compress"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("'" + c.spec + "'"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("none, zstd or zstd:LEVEL"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("cannot connect"), std::string::npos) << "checked before contacting the VMM: " << r.err;
    EXPECT_EQ(r.out.find("spin"), std::string::npos) << "the guest must not start: " << r.out;
    EXPECT_FALSE(fs::exists(Path("out.vmsnap")));
  }
}

}  // namespace
}  // namespace vmsnap
