// SPDX-License-Identifier: MIT
// The built vmsnap binary on snapshot files written through SnapshotWriter (and
// the golden files): inspect --json keys and decoded registers, verify on good
// and corrupt files, diff of equal and differing snapshots, flatten of a chain.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "format/reader.h"
#include "format/writer.h"
#include "tests/format/test_util.h"

namespace vmsnap {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

struct RunResult {
  int status = -1;
  std::string out, err;
};

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') q += "'\\''";
    else q += c;
  }
  return q + "'";
}

class ToolsCli : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vmsnap-tools-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  RunResult Run(const std::string& args) {
    std::string err_file = Path("stderr.txt");
    std::string cmd = std::string(VMSNAP_BIN) + " " + args + " 2>" + Quote(err_file);
    RunResult r;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return r;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    std::ifstream e(err_file);
    r.err.assign(std::istreambuf_iterator<char>(e), {});
    return r;
  }

  json InspectJson(const std::string& path) {
    RunResult r = Run("inspect --json " + Quote(path));
    EXPECT_EQ(r.status, 0) << r.err;
    return json::parse(r.out);
  }

  std::string dir_;
};

constexpr uint64_t kPage = 4096;
constexpr uint64_t kHighBase = 0x100000000ull;

// Guest memory of the test snapshots: 1 MiB at 0 and 256 KiB at 4 GiB.
struct Memory {
  std::vector<uint8_t> low = std::vector<uint8_t>(1 << 20, 0);
  std::vector<uint8_t> high = std::vector<uint8_t>(256 << 10, 0);
  uint8_t* At(uint64_t gpa) { return gpa >= kHighBase ? &high[gpa - kHighBase] : &low[gpa]; }
  void Fill(uint64_t gpa, uint8_t v) { std::memset(At(gpa), v, kPage); }
};

Memory BaseMemory() {
  Memory m;
  m.Fill(0x0, 0x11);
  m.Fill(0x1000, 0x22);
  for (uint64_t p = 0x80000; p < 0x90000; p += kPage) m.Fill(p, uint8_t(p >> 12));
  m.Fill(kHighBase + 0x3000, 0x44);
  return m;
}

std::vector<uint8_t> Xsave() {
  std::vector<uint8_t> a(4096, 0);
  a[0] = 0x7f; a[1] = 0x03;                  // FCW 0x37f
  a[24] = 0x80; a[25] = 0x1f;                // MXCSR 0x1f80
  for (int i = 0; i < 16; i++) a[160 + 16 * 5 + i] = uint8_t(0xa0 + i);  // XMM5
  a[512] = 0x7;                              // XSTATE_BV
  for (int i = 0; i < 16; i++) a[576 + 16 * 5 + i] = uint8_t(0xb0 + i);  // YMM5 upper
  return a;
}

std::vector<uint8_t> Lapic(uint32_t tmcct) {
  std::vector<uint8_t> p(1024, 0);
  auto put = [&](size_t off, uint32_t v) { for (int i = 0; i < 4; i++) p[off + i] = uint8_t(v >> (8 * i)); };
  put(0x20, 0x01000000);
  put(0x30, 0x50014);
  put(0xf0, 0x1ff);
  put(0x200 + 16 * 1, 1u << 16);  // IRR vector 48
  put(0x320, 0x400ec);            // TSC-deadline, vector 0xec
  put(0x390, tmcct);
  return p;
}

struct X86State {
  uint64_t rip1 = 0x200000;
  uint64_t tsc = 1000000;
  uint32_t tmcct = 0x100;
};

void FillX86(schema::Manifest::Builder m, const X86State& st) {
  m.setArch(schema::Arch::X8664);
  m.getCreated().setToolVersion("test");
  m.getCreated().setTimeUnixNs(1700000000000000000);
  auto mem = m.getMemory();
  mem.setPageSize(kPage);
  auto regions = mem.initRegions(2);
  regions[0].setSlot(0);
  regions[0].setGuestPhysAddr(0);
  regions[0].setSize(1 << 20);
  regions[0].setName("low");
  regions[1].setSlot(1);
  regions[1].setGuestPhysAddr(kHighBase);
  regions[1].setSize(256 << 10);
  regions[1].setName("high");
  auto vcpus = m.initVcpus(2);
  auto xs = Xsave();
  auto lapic = Lapic(st.tmcct);
  for (uint32_t i = 0; i < 2; i++) {
    vcpus[i].setId(i);
    auto x = vcpus[i].initX8664();
    x.setMpState(i == 0 ? 0 : 3);
    auto regs = x.getRegs();
    regs.setRip(i == 0 ? 0x100000 : st.rip1);
    regs.setRflags(0x246);
    regs.setRsp(0x7000 + i);
    regs.setRdi(i);
    auto sregs = x.getSregs();
    sregs.setCr0(0x80050033);
    sregs.setCr3(0x9000);
    sregs.setCr4(0x20);
    sregs.setEfer(0x500);
    sregs.setApicBase(0xfee00900);
    x.getDebugregs().setDr7(0x400);
    x.setXsave(capnp::Data::Reader(xs.data(), xs.size()));
    x.setLapic(capnp::Data::Reader(lapic.data(), lapic.size()));
    auto msrs = x.initMsrs(3);
    msrs[0].setIndex(0x10);
    msrs[0].setValue(st.tsc);
    msrs[1].setIndex(0xc0000080);
    msrs[1].setValue(0x500);
    msrs[2].setIndex(0xc0000082);
    msrs[2].setValue(0xffffffff81800000);
    x.getEvents().getNmi().setMasked(1);
    x.setTscKhz(2500000);
  }
  auto vm = m.getVm().initX8664();
  vm.getClock().setClock(st.tsc * 3);
  vm.getConfig().setIrqchip(true);
}

// Writes a full snapshot of `mem` (or, with `parent`, the pages `dirty` lists).
Result<layout::SnapshotId> Write(const std::string& path, const X86State& st, Memory& mem,
                                 const std::string* parent = nullptr,
                                 const layout::SnapshotId* parent_id = nullptr,
                                 const std::vector<uint64_t>& dirty = {},
                                 const std::function<void(schema::Manifest::Builder)>& tweak = {}) {
  WriterOptions o;
  o.threads = 1;
  VMSNAP_ASSIGN_OR_RETURN(auto w, SnapshotWriter::Create(path, o));
  FillX86(w->manifest(), st);
  if (tweak) tweak(w->manifest());
  if (parent) {
    auto p = w->manifest().initParent();
    p.setSnapshotId(capnp::Data::Reader(parent_id->data(), parent_id->size()));
    p.setPath(fs::path(*parent).filename().string());
    p.setDepth(1);
    for (auto [base, data] : {std::pair<uint64_t, std::vector<uint8_t>*>{0, &mem.low},
                              {kHighBase, &mem.high}}) {
      std::vector<uint8_t> defined((data->size() / kPage + 7) / 8, 0);
      for (uint64_t g : dirty) {
        if (g >= base && g < base + data->size()) {
          uint64_t i = (g - base) / kPage;
          defined[i / 8] |= uint8_t(1 << (i % 8));
        }
      }
      VMSNAP_RETURN_IF_ERROR(w->AddPages(base, data->data(), data->size(), defined.data()));
    }
  } else {
    VMSNAP_RETURN_IF_ERROR(w->AddMemory(0, mem.low.data(), mem.low.size()));
    VMSNAP_RETURN_IF_ERROR(w->AddMemory(kHighBase, mem.high.data(), mem.high.size()));
  }
  VMSNAP_RETURN_IF_ERROR(w->Commit());
  return w->id();
}

TEST_F(ToolsCli, InspectJsonHasTheContractKeysAndDecodedRegisters) {
  Memory mem = BaseMemory();
  std::string a = Path("a.vmsnap");
  ASSERT_TRUE(Write(a, {}, mem).ok());
  json j = InspectJson(a);
  EXPECT_EQ(j["format_version"], "1.0");
  EXPECT_EQ(j["arch"], "x86_64");
  EXPECT_TRUE(j["parent"].is_null());
  EXPECT_EQ(j["id"].get<std::string>().size(), 32u);
  ASSERT_EQ(j["vcpus"].size(), 2u);
  const json& v1 = j["vcpus"][1];
  EXPECT_EQ(v1["id"], 1);
  EXPECT_EQ(v1["mp_state"], "HALTED");
  EXPECT_EQ(j["vcpus"][0]["mp_state"], "RUNNABLE");
  EXPECT_EQ(v1["regs"]["rip"], "0x200000");
  EXPECT_EQ(v1["regs"]["rflags"], "0x246");
  EXPECT_EQ(v1["regs"]["rsp"], "0x7001");
  for (const char* r : {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10",
                        "r11", "r12", "r13", "r14", "r15"}) {
    EXPECT_TRUE(v1["regs"].contains(r)) << r;
  }
  EXPECT_EQ(v1["sregs"]["cr0"], "0x80050033");
  EXPECT_EQ(v1["sregs"]["cr3"], "0x9000");
  EXPECT_EQ(v1["sregs"]["efer"], "0x500");
  EXPECT_EQ(v1["sregs"]["apic_base"], "0xfee00900");
  EXPECT_EQ(v1["debugregs"]["dr7"], "0x400");
  EXPECT_EQ(v1["msrs"]["0x10"], "0xf4240");
  EXPECT_EQ(v1["msrs"]["0xc0000082"], "0xffffffff81800000");
  EXPECT_EQ(v1["events"]["nmi"]["masked"], "0x1");
  EXPECT_EQ(v1["xsave_decoded"]["fcw"], "0x37f");
  EXPECT_EQ(v1["xsave_decoded"]["mxcsr"], "0x1f80");
  EXPECT_EQ(v1["xsave_decoded"]["xmm5"], "0xafaeadacabaaa9a8a7a6a5a4a3a2a1a0");
  EXPECT_EQ(v1["xsave_decoded"]["ymm5"],
            "0xbfbebdbcbbbab9b8b7b6b5b4b3b2b1b0afaeadacabaaa9a8a7a6a5a4a3a2a1a0");
  EXPECT_EQ(v1["lapic_decoded"]["version"], "0x50014");
  EXPECT_EQ(v1["lapic_decoded"]["irr"], json::array({48}));
  EXPECT_EQ(v1["lapic_decoded"]["timer_mode"], "tsc-deadline");
  EXPECT_EQ(v1["tsc_khz"], 2500000);
  EXPECT_EQ(j["vm"]["config"]["irqchip"], true);
  const json& m = j["memory"];
  EXPECT_EQ(m["size"], (1 << 20) + (256 << 10));
  EXPECT_EQ(m["page_size"], 4096);
  EXPECT_EQ(m["regions"].size(), 2u);
  EXPECT_EQ(m["regions"][1]["guest_phys_addr"], "0x100000000");
  EXPECT_EQ(m["present_pages"], 2 + 16 + 1);
  EXPECT_EQ(m["zero_pages"], 256 + 64 - 19);
  EXPECT_GT(m["stored_bytes"].get<uint64_t>(), 0u);
  EXPECT_GE(m["chunks"].get<uint64_t>(), 2u);
}

TEST_F(ToolsCli, InspectReportNamesRegistersAndMsrs) {
  Memory mem = BaseMemory();
  std::string a = Path("a.vmsnap");
  ASSERT_TRUE(Write(a, {}, mem).ok());
  RunResult r = Run("inspect " + Quote(a));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* s : {"x86_64", "vCPU 1  HALTED", "rip", "0x200000", "EFER", "LSTAR",
                        "0xffffffff81800000", "xmm5", "lvt_timer", "region slot 1"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
  }
  r = Run("inspect --memory-map " + Quote(a));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("0x80000            0x90000            present"), std::string::npos) << r.out;
}

TEST_F(ToolsCli, MemoryMapJsonListsRangesPerRegion) {
  Memory mem = BaseMemory();
  std::string a = Path("a.vmsnap");
  ASSERT_TRUE(Write(a, {}, mem).ok());
  RunResult r = Run("inspect --json --memory-map " + Quote(a));
  ASSERT_EQ(r.status, 0) << r.err;
  json map = json::parse(r.out)["memory_map"];
  ASSERT_EQ(map.size(), 2u);
  json expect_high = json::parse(R"([
    {"start":"0x100000000","end":"0x100003000","state":"zero","pages":3,"bytes":12288},
    {"start":"0x100003000","end":"0x100004000","state":"present","pages":1,"bytes":4096},
    {"start":"0x100004000","end":"0x100040000","state":"zero","pages":60,"bytes":245760}])");
  EXPECT_EQ(map[1]["ranges"], expect_high);
}

TEST_F(ToolsCli, VerifyReportsOk) {
  Memory mem = BaseMemory();
  std::string a = Path("a.vmsnap");
  ASSERT_TRUE(Write(a, {}, mem).ok());
  auto rd = SnapshotReader::Open(a);
  ASSERT_TRUE(rd.ok());
  RunResult r = Run("verify " + Quote(a));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, a + ": ok (" + std::to_string(rd.value()->chunk_index().size()) + " chunks, " +
                       std::to_string(rd.value()->file_size()) + " bytes)\n");
}

std::vector<uint8_t> ReadFile(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}
void WriteFile(const std::string& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

TEST_F(ToolsCli, VerifyRejectsEveryCorruption) {
  Memory mem = BaseMemory();
  std::string a = Path("a.vmsnap");
  ASSERT_TRUE(Write(a, {}, mem).ok());
  auto rd = SnapshotReader::Open(a);
  ASSERT_TRUE(rd.ok());
  const auto good = ReadFile(a);
  const uint64_t size = good.size();
  const uint64_t mo = rd.value()->manifest_offset(), ml = rd.value()->manifest_length();
  const auto chunks = rd.value()->chunk_index();
  ASSERT_GE(chunks.size(), 2u);
  std::string bad = Path("bad.vmsnap");

  struct Case {
    std::string what;
    std::vector<uint8_t> bytes;
    std::string expect;  // a word the message must contain
  };
  std::vector<Case> cases;
  auto truncated = [&](uint64_t n) { return std::vector<uint8_t>(good.begin(), good.begin() + long(n)); };
  auto flipped = [&](uint64_t off) {
    auto b = good;
    b[off] ^= 0x10;
    return b;
  };
  cases.push_back({"empty file", {}, ""});
  cases.push_back({"truncated inside the header", truncated(30), ""});
  cases.push_back({"truncated after the header", truncated(64), ""});
  cases.push_back({"truncated inside chunk 0", truncated(chunks[0].file_offset + chunks[0].stored_length / 2), ""});
  cases.push_back({"truncated at the manifest", truncated(mo), ""});
  cases.push_back({"truncated inside the manifest", truncated(mo + ml / 2), ""});
  cases.push_back({"truncated at the footer", truncated(size - 64), ""});
  cases.push_back({"truncated by one byte", truncated(size - 1), ""});
  cases.push_back({"bit flip in the header", flipped(9), "header"});
  for (size_t i = 0; i < chunks.size(); i++) {
    cases.push_back({"bit flip in chunk " + std::to_string(i),
                     flipped(chunks[i].file_offset + chunks[i].stored_length / 2), "chunk"});
  }
  cases.push_back({"bit flip in the manifest", flipped(mo + ml / 2), "manifest"});
  cases.push_back({"bit flip in the footer", flipped(size - 40), "footer"});
  for (const Case& c : cases) {
    WriteFile(bad, c.bytes);
    RunResult r = Run("verify " + Quote(bad));
    EXPECT_EQ(r.status, 1) << c.what << ": " << r.out << r.err;
    EXPECT_EQ(r.out, "") << c.what;
    EXPECT_NE(r.err.find(bad), std::string::npos) << c.what << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.what << ": " << r.err;
    if (!c.expect.empty()) {
      EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.what << ": " << r.err;
    }
    // inspect and diff stay well-behaved on the same input.
    RunResult i = Run("inspect --json " + Quote(bad));
    EXPECT_TRUE(i.status == 0 || i.status == 2) << c.what << ": " << i.err;
    RunResult d = Run("diff " + Quote(a) + " " + Quote(bad));
    EXPECT_TRUE(d.status == 1 || d.status == 2) << c.what << ": " << d.err;
  }
}

TEST_F(ToolsCli, MissingAndGarbageInputsAreErrorsNotCrashes) {
  std::string missing = Path("nope.vmsnap");
  for (const std::string cmd : {"inspect", "inspect --json", "verify"}) {
    RunResult r = Run(cmd + " " + Quote(missing));
    EXPECT_EQ(r.status, 2) << cmd;
    EXPECT_NE(r.err.find("nope.vmsnap"), std::string::npos) << r.err;
  }
  std::string junk = Path("junk.vmsnap");
  std::vector<uint8_t> bytes(10000);
  for (size_t i = 0; i < bytes.size(); i++) bytes[i] = uint8_t(i * 131 + 7);
  WriteFile(junk, bytes);
  EXPECT_EQ(Run("verify " + Quote(junk)).status, 1);  // read, and not a snapshot
  EXPECT_EQ(Run("diff " + Quote(junk) + " " + Quote(junk)).status, 2);
  EXPECT_EQ(Run("diff " + Quote(missing)).status, 2);  // usage error
  EXPECT_EQ(Run("flatten " + Quote(junk) + " -o " + Quote(Path("out.vmsnap"))).status, 2);
  EXPECT_FALSE(fs::exists(Path("out.vmsnap")));
}

// Manifests that pass every checksum but hold odd content: the tools show
// what is there and never crash.
TEST_F(ToolsCli, OddButWellFormedManifestsDoNotCrash) {
  Memory mem = BaseMemory();
  std::vector<std::function<void(schema::Manifest::Builder)>> tweaks = {
      [](schema::Manifest::Builder m) {
        uint8_t three[3] = {1, 2, 3};
        m.getVcpus()[0].getX8664().setXsave(capnp::Data::Reader(three, 3));
        m.getVcpus()[1].getX8664().setLapic(capnp::Data::Reader(three, 0));
        m.getVcpus()[1].getX8664().setMpState(0xffffffff);
      },
      [](schema::Manifest::Builder m) { m.setArch(static_cast<schema::Arch>(9)); },
      [](schema::Manifest::Builder m) {
        m.initVcpus(1)[0].initS390x();  // an s390x vCPU in an x86_64 snapshot
        auto vm = m.getVm().initS390x();
        vm.initCmma(1)[0].setStartGfn(~0ull);
        auto k = vm.initSkeys(1)[0];
        uint8_t keys[2] = {0xff, 0xff};
        k.setStartGfn(~0ull);
        k.setKeys(capnp::Data::Reader(keys, 2));
      },
      [](schema::Manifest::Builder m) {
        auto e = m.getVm().initPpc64().getHtab().initEntries(1)[0];
        e.setV(~0ull);
        e.setR(~0ull);
        m.initDevices(1)[0].setName(std::string(5000, 'x'));
      },
  };
  int n = 0;
  for (auto& t : tweaks) {
    std::string p = Path("odd" + std::to_string(n++) + ".vmsnap");
    ASSERT_TRUE(Write(p, {}, mem, nullptr, nullptr, {}, t).ok());
    for (const std::string cmd : {"inspect", "inspect --json --memory-map", "verify"}) {
      RunResult r = Run(cmd + " " + Quote(p));
      EXPECT_TRUE(r.status == 0 || r.status == 2) << cmd << " " << p << ": " << r.err;
    }
    RunResult r = Run("diff " + Quote(p) + " " + Quote(p));
    EXPECT_EQ(r.status, 0) << p << ": " << r.err;
  }
  json j = InspectJson(Path("odd0.vmsnap"));
  EXPECT_TRUE(j["vcpus"][0]["xsave_decoded"].contains("error"));
  EXPECT_EQ(j["vcpus"][1]["mp_state"], "UNKNOWN(4294967295)");
  EXPECT_EQ(InspectJson(Path("odd1.vmsnap"))["arch"], "unknown(9)");
}

TEST_F(ToolsCli, DiffOfAFileWithItselfIsIdentical) {
  Memory mem = BaseMemory();
  std::string a = Path("a.vmsnap");
  ASSERT_TRUE(Write(a, {}, mem).ok());
  RunResult r = Run("diff --json " + Quote(a) + " " + Quote(a));
  ASSERT_EQ(r.status, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["identical"], true);
  EXPECT_EQ(j["differences"], json::array());
  EXPECT_EQ(j["memory"]["differing_pages"], 0);
  EXPECT_EQ(j["memory"]["ranges"], json::array());
  r = Run("diff " + Quote(a) + " " + Quote(a));
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "identical\n");
}

TEST_F(ToolsCli, DiffNamesTheRegisterAndThePages) {
  Memory ma = BaseMemory();
  Memory mb = BaseMemory();
  mb.Fill(0x5000, 0x55);                        // zero in A
  mb.Fill(0x6000, 0x66);                        // adjacent: one range
  mb.At(0x81000)[100] ^= 1;                     // one byte of a stored page
  mb.Fill(kHighBase + 0x3000, 0);               // stored in A, zero in B
  std::string a = Path("a.vmsnap"), b = Path("b.vmsnap");
  ASSERT_TRUE(Write(a, {}, ma).ok());
  X86State sb;
  sb.rip1 = 0x200004;
  ASSERT_TRUE(Write(b, sb, mb).ok());
  RunResult r = Run("diff --json " + Quote(a) + " " + Quote(b));
  ASSERT_EQ(r.status, 1) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["identical"], false);
  EXPECT_EQ(j["differences"], json::parse(R"([{"path":"vcpus[1].regs.rip","a":"0x200000","b":"0x200004"}])"));
  EXPECT_EQ(j["memory"]["differing_pages"], 4);
  EXPECT_EQ(j["memory"]["ranges"], json::parse(R"([{"start":"0x5000","end":"0x7000"},
      {"start":"0x81000","end":"0x82000"},{"start":"0x100003000","end":"0x100004000"}])"));
  r = Run("diff " + Quote(a) + " " + Quote(b));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("vcpus[1].regs.rip: 0x200000 -> 0x200004\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("memory: 4 page(s) differ in 3 range(s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0x5000-0x7000"), std::string::npos) << r.out;
}

// KVM_GET_REG_LIST need not list registers in the same order on two hosts,
// nor list the same ones: diff pairs arm64 registers by ONE_REG id and names
// them as inspect does. The snapshots are the golden aarch64 file with its
// manifest edited.
TEST_F(ToolsCli, DiffPairsArm64RegistersByIdNotPosition) {
  const std::string golden = std::string(VMSNAP_GOLDEN_DIR) + "/aarch64.vmsnap";
  if (!fs::exists(golden)) GTEST_SKIP() << "no " << golden;
  const testing::Bytes base = testing::ReadFileBytes(golden);
  using Edit = std::function<void(schema::aarch64::Vcpu::Builder)>;
  auto derive = [&](const std::string& name, const Edit& edit) {
    testing::WriteFileBytes(Path(name), testing::RewriteManifest(base, [&](schema::Manifest::Builder m) {
      edit(m.getVcpus()[0].getAarch64());
    }));
    return Path(name);
  };
  // The same registers in the opposite order, in every list.
  auto reverse = [](schema::aarch64::Vcpu::Builder v) {
    std::vector<std::pair<uint64_t, uint64_t>> regs;
    for (auto r : v.getSysregs()) regs.emplace_back(r.getId(), r.getValue());
    for (unsigned i = 0; i < regs.size(); ++i) {
      v.getSysregs()[i].setId(regs[regs.size() - 1 - i].first);
      v.getSysregs()[i].setValue(regs[regs.size() - 1 - i].second);
    }
    std::vector<std::pair<uint64_t, uint64_t>> fw;
    for (auto r : v.getFirmware()) fw.emplace_back(r.getId(), r.getValue());
    for (unsigned i = 0; i < fw.size(); ++i) {
      v.getFirmware()[i].setId(fw[fw.size() - 1 - i].first);
      v.getFirmware()[i].setValue(fw[fw.size() - 1 - i].second);
    }
    std::vector<uint64_t> list;
    for (uint64_t id : v.getRegList()) list.push_back(id);
    for (unsigned i = 0; i < list.size(); ++i) v.getRegList().set(i, list[list.size() - 1 - i]);
  };
  const std::string a = derive("a.vmsnap", [](auto) {});
  const std::string same = derive("reordered.vmsnap", reverse);
  RunResult r = Run("diff " + Quote(a) + " " + Quote(same));
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  EXPECT_EQ(r.out, "identical\n");

  // Reordered, and TCR_EL1 changed: only TCR_EL1 differs.
  const std::string changed = derive("changed.vmsnap", [&](schema::aarch64::Vcpu::Builder v) {
    reverse(v);
    for (auto reg : v.getSysregs()) {
      if (reg.getId() == 0x603000000013c102ull) reg.setValue(0x00000034b5103510ull);
    }
  });
  r = Run("diff --json " + Quote(a) + " " + Quote(changed));
  ASSERT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(json::parse(r.out)["differences"],
            json::parse(R"([{"path":"vcpus[0].sysregs.TCR_EL1","a":"0x34b5193519","b":"0x34b5103510"}])"));
  r = Run("diff " + Quote(a) + " " + Quote(changed));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("vcpus[0].sysregs.TCR_EL1: 0x34b5193519 -> 0x34b5103510\n"), std::string::npos) << r.out;

  // A register (AMAIR_EL1) that only B has, listed first: nothing after it shifts.
  const std::string extra = derive("extra.vmsnap", [](schema::aarch64::Vcpu::Builder v) {
    constexpr uint64_t kAmair = 0x603000000013c518ull;
    std::vector<std::pair<uint64_t, uint64_t>> regs{{kAmair, 0x7}};
    for (auto reg : v.getSysregs()) regs.emplace_back(reg.getId(), reg.getValue());
    auto out = v.initSysregs(static_cast<unsigned>(regs.size()));
    for (unsigned i = 0; i < regs.size(); ++i) {
      out[i].setId(regs[i].first);
      out[i].setValue(regs[i].second);
    }
    std::vector<uint64_t> list{kAmair};
    for (uint64_t id : v.getRegList()) list.push_back(id);
    auto l = v.initRegList(static_cast<unsigned>(list.size()));
    for (unsigned i = 0; i < list.size(); ++i) l.set(i, list[i]);
  });
  r = Run("diff --json " + Quote(a) + " " + Quote(extra));
  ASSERT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(json::parse(r.out)["differences"], json::parse(R"([
      {"path":"vcpus[0].sysregs.AMAIR_EL1","a":null,"b":"0x7"},
      {"path":"vcpus[0].reg_list.AMAIR_EL1","a":null,"b":"0x603000000013c518"}])"));
  r = Run("diff " + Quote(extra) + " " + Quote(a));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("vcpus[0].sysregs.AMAIR_EL1: 0x7 -> "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("MPIDR_EL1"), std::string::npos) << "a register after the extra one was shifted:\n" << r.out;

  // The vGIC's lists too: the distributor's registers by offset.
  auto derive_vm = [&](const std::string& name, const std::function<void(schema::aarch64::Gic::Builder)>& edit) {
    testing::WriteFileBytes(Path(name), testing::RewriteManifest(base, [&](schema::Manifest::Builder m) {
      edit(m.getVm().getAarch64().getGic());
    }));
    return Path(name);
  };
  auto reverse_dist = [](schema::aarch64::Gic::Builder g) {
    std::vector<std::pair<uint32_t, uint32_t>> regs;
    for (auto e : g.getDist()) regs.emplace_back(e.getOffset(), e.getValue());
    ASSERT_GT(regs.size(), 1u);
    for (unsigned i = 0; i < regs.size(); ++i) {
      g.getDist()[i].setOffset(regs[regs.size() - 1 - i].first);
      g.getDist()[i].setValue(regs[regs.size() - 1 - i].second);
    }
  };
  r = Run("diff " + Quote(a) + " " + Quote(derive_vm("gic-reordered.vmsnap", reverse_dist)));
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  const std::string gic_changed = derive_vm("gic-changed.vmsnap", [&](schema::aarch64::Gic::Builder g) {
    reverse_dist(g);
    for (auto reg : g.getDist()) {
      if (reg.getOffset() == 0x104) reg.setValue(0x7);
    }
  });
  r = Run("diff --json " + Quote(a) + " " + Quote(gic_changed));
  ASSERT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(json::parse(r.out)["differences"],
            json::parse(R"([{"path":"vm.gic.dist.offset 0x104","a":"0x3","b":"0x7"}])"));
}

TEST_F(ToolsCli, IgnoreVolatileSkipsTimeBasedState) {
  Memory mem = BaseMemory();
  std::string a = Path("a.vmsnap"), b = Path("b.vmsnap");
  ASSERT_TRUE(Write(a, {}, mem).ok());
  X86State later;
  later.tsc = 5000000;     // TSC MSR and kvmclock moved on
  later.tmcct = 0x80;      // LAPIC timer counted down
  ASSERT_TRUE(Write(b, later, mem).ok());
  RunResult r = Run("diff --json " + Quote(a) + " " + Quote(b));
  ASSERT_EQ(r.status, 1) << r.err;
  std::vector<std::string> paths;
  json doc = json::parse(r.out);
  for (const auto& d : doc["differences"]) paths.push_back(d["path"]);
  EXPECT_EQ(paths, (std::vector<std::string>{
                       "vcpus[0].lapic_decoded.timer_current_count", "vcpus[0].msrs.0x10",
                       "vcpus[1].lapic_decoded.timer_current_count", "vcpus[1].msrs.0x10",
                       "vm.clock.clock"}));
  r = Run("diff --ignore-volatile " + Quote(a) + " " + Quote(b));
  EXPECT_EQ(r.status, 0) << r.out << r.err;
}

TEST_F(ToolsCli, ChainInspectVerifyAndFlatten) {
  Memory base = BaseMemory();
  std::string p = Path("base.vmsnap"), c = Path("child.vmsnap"), f = Path("flat.vmsnap");
  auto pid = Write(p, {}, base);
  ASSERT_TRUE(pid.ok()) << pid.status().message();
  Memory now = base;
  now.Fill(0x1000, 0);            // stored page becomes zero
  now.Fill(0x2000, 0x77);         // zero page becomes stored
  now.Fill(kHighBase + 0x20000, 0x99);
  X86State st;
  st.rip1 = 0x300000;
  auto cid = Write(c, st, now, &p, &pid.value(), {0x1000, 0x2000, kHighBase + 0x20000});
  ASSERT_TRUE(cid.ok()) << cid.status().message();

  json j = InspectJson(c);
  ASSERT_TRUE(j["parent"].is_object());
  EXPECT_EQ(j["parent"]["path"], "base.vmsnap");
  EXPECT_EQ(j["parent"]["depth"], 1);
  ASSERT_EQ(j["chain"].size(), 2u);
  EXPECT_EQ(j["chain"][0]["found"], true);
  EXPECT_EQ(j["chain"][0]["matches"], true);
  EXPECT_EQ(j["memory"]["present_pages"], 2);
  EXPECT_EQ(j["memory"]["zero_pages"], 1);

  RunResult r = Run("verify " + Quote(c));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("chain of 2 snapshots"), std::string::npos) << r.out;

  r = Run("flatten " + Quote(c) + " -o " + Quote(f));
  ASSERT_EQ(r.status, 0) << r.err;
  json jf = InspectJson(f);
  EXPECT_TRUE(jf["parent"].is_null());
  EXPECT_EQ(jf["vcpus"][1]["regs"]["rip"], "0x300000");
  EXPECT_EQ(Run("verify " + Quote(f)).status, 0);
  r = Run("diff --json " + Quote(c) + " " + Quote(f));
  EXPECT_EQ(r.status, 0) << r.out << r.err;
  // And the memory is really the merged chain, not the leaf's pages alone.
  r = Run("diff --json " + Quote(p) + " " + Quote(f));
  EXPECT_EQ(r.status, 1);
  json d = json::parse(r.out);
  EXPECT_EQ(d["memory"]["differing_pages"], 3);

  // A parent that changed under the child: inspect shows it, verify refuses.
  Memory other = BaseMemory();
  other.Fill(0x9000, 0x5a);
  fs::remove(p);
  ASSERT_TRUE(Write(p, {}, other).ok());
  j = InspectJson(c);
  EXPECT_EQ(j["chain"][0]["found"], true);
  EXPECT_EQ(j["chain"][0]["matches"], false);
  r = Run("verify " + Quote(c));
  EXPECT_EQ(r.status, 1);  // read, and a check failed
  EXPECT_NE(r.err.find("not the recorded file"), std::string::npos) << r.err;
  fs::remove(p);
  j = InspectJson(c);
  EXPECT_EQ(j["chain"][0]["found"], false);
  r = Run("verify " + Quote(c));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("missing"), std::string::npos) << r.err;
}

TEST_F(ToolsCli, HelpDescribesEachCommand) {
  for (const char* cmd : {"inspect", "verify", "diff", "flatten"}) {
    RunResult r = Run(std::string(cmd) + " --help");
    EXPECT_EQ(r.status, 0) << cmd;
    EXPECT_NE(r.out.find("Exit status"), std::string::npos) << cmd << r.out;
  }
  RunResult r = Run("diff --help");
  EXPECT_NE(r.out.find("end is exclusive"), std::string::npos);
  EXPECT_NE(r.out.find("TSC_DEADLINE"), std::string::npos);
}

// Every command pays for the libraries the whole tool links before its
// main: the store's (librados, libcurl, libcrypto) are opened when a store
// is used, not linked. (Where there is a front, it links none at all.)
TEST_F(ToolsCli, StartsWithoutLoadingTheStoresLibraries) {
  FILE* p = popen(("readelf -d " + Quote(VMSNAP_TOOL_FILE) + " 2>/dev/null").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string dynamic;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) dynamic.append(buf, n);
  if (pclose(p) != 0 || dynamic.find("(NEEDED)") == std::string::npos) GTEST_SKIP() << "readelf is not installed";
  for (const char* lib : {"librados", "libcurl", "libcrypto", "libssl"}) {
    EXPECT_EQ(dynamic.find(std::string("[") + lib), std::string::npos) << lib << " is linked:\n" << dynamic;
  }
}

// The golden files of tests/golden (written by the first format version): the
// good ones inspect and verify on every later version; each bad one fails with
// exit 2 and a message naming what is wrong.
TEST_F(ToolsCli, GoldenFiles) {
  const std::string g = std::string(VMSNAP_GOLDEN_DIR) + "/";
  if (!fs::exists(g + "x86_64.vmsnap")) GTEST_SKIP() << "no golden files in " << g;
  struct Good {
    const char* file;
    const char* arch;
  };
  for (Good f : {Good{"x86_64.vmsnap", "x86_64"}, Good{"x86_64-child.vmsnap", "x86_64"},
                 Good{"s390x.vmsnap", "s390x"}, Good{"ppc64.vmsnap", "ppc64"},
                 Good{"aarch64.vmsnap", "aarch64"},
                 Good{"newer-minor.vmsnap", nullptr}}) {
    std::string p = g + f.file;
    if (!fs::exists(p)) continue;
    json j = InspectJson(p);
    if (f.arch) {
      EXPECT_EQ(j["arch"], f.arch) << p;
    }
    EXPECT_GT(j["vcpus"].size(), 0u) << p;
    EXPECT_GT(j["memory"]["present_pages"].get<uint64_t>(), 0u) << p;
    RunResult r = Run("verify " + Quote(p));
    EXPECT_EQ(r.status, 0) << p << ": " << r.err;
    EXPECT_NE(r.out.find(": ok ("), std::string::npos) << r.out;
    EXPECT_EQ(Run("inspect " + Quote(p)).status, 0) << p;
    EXPECT_EQ(Run("diff " + Quote(p) + " " + Quote(p)).status, 0) << p;
  }
  // Values the golden README documents, as inspect --json shows them.
  json x = InspectJson(g + "x86_64.vmsnap");
  EXPECT_EQ(x["id"], "696083639facf1d9f29520e6aac356a4");
  EXPECT_EQ(x["vcpus"][0]["mp_state"], "RUNNABLE");
  EXPECT_EQ(x["vcpus"][1]["mp_state"], "HALTED");
  EXPECT_EQ(x["vcpus"][0]["regs"]["rip"], "0x100000");
  EXPECT_EQ(x["vcpus"][1]["regs"]["rip"], "0x100010");
  EXPECT_EQ(x["vcpus"][0]["sregs"]["efer"], "0xd01");
  EXPECT_EQ(x["vcpus"][1]["debugregs"]["dr7"], "0x40d");
  EXPECT_EQ(x["vcpus"][0]["msrs"]["0xc0000082"], "0xffffffff81c00080");
  EXPECT_EQ(x["vcpus"][1]["msrs"]["0xc0000103"], "0x1");
  EXPECT_EQ(x["vcpus"][0]["xsave_decoded"]["fcw"], "0x37f");
  EXPECT_EQ(x["vcpus"][0]["xsave_decoded"]["st0"], "0x3fff8000000000000000");  // 1.0
  EXPECT_EQ(x["vcpus"][0]["xsave_decoded"]["st1"], "0xc000a000000000000000");  // -2.5
  EXPECT_EQ(x["vcpus"][1]["lapic_decoded"]["id"], "0x1000000");
  EXPECT_EQ(x["vcpus"][0]["lapic_decoded"]["isr"], json::array({0x21}));
  EXPECT_EQ(x["vcpus"][0]["lapic_decoded"]["irr"], json::array({0x23}));
  EXPECT_EQ(x["vcpus"][1]["events"]["exception"]["nr"], "0xe");
  EXPECT_EQ(x["memory"]["present_pages"], 10);
  EXPECT_EQ(x["memory"]["zero_pages"], 70);
  EXPECT_EQ(x["memory"]["stored_bytes"], 8352);
  EXPECT_EQ(x["memory"]["size"], 327680);
  json c = InspectJson(g + "x86_64-child.vmsnap");
  EXPECT_EQ(c["parent"]["id"], "696083639facf1d9f29520e6aac356a4");
  EXPECT_EQ(c["memory"]["present_pages"], 2);
  EXPECT_EQ(c["memory"]["zero_pages"], 1);
  EXPECT_EQ(c["memory"]["absent_pages"], 77);
  {
    // The child against its parent: the two rips and the three pages it defines.
    RunResult r = Run("diff --json " + Quote(g + "x86_64.vmsnap") + " " + Quote(g + "x86_64-child.vmsnap"));
    EXPECT_EQ(r.status, 1) << r.err;
    json d = json::parse(r.out);
    // The child was written without the parent's device record.
    ASSERT_EQ(d["differences"].size(), 3u) << d.dump();
    EXPECT_EQ(d["differences"][0]["path"], "vcpus[0].regs.rip");
    EXPECT_EQ(d["differences"][1]["path"], "vcpus[1].regs.rip");
    EXPECT_EQ(d["differences"][1]["b"], "0x100210");
    EXPECT_EQ(d["differences"][2]["path"], "devices[0]");
    EXPECT_TRUE(d["differences"][2]["b"].is_null());
    EXPECT_EQ(d["memory"]["differing_pages"], 3);
  }
  json s = InspectJson(g + "s390x.vmsnap");
  EXPECT_EQ(s["vcpus"][0]["mp_state"], "OPERATING");
  // The golden file stores 4 for vCPU 1, after the schema comment "STOPPED (4)";
  // in include/uapi/linux/kvm.h 4 is SIPI_RECEIVED and STOPPED is 5.
  EXPECT_EQ(s["vcpus"][1]["mp_state"], "SIPI_RECEIVED");
  EXPECT_EQ(s["vm"]["cmma_decoded"]["counts"]["unused"], 6);
  EXPECT_EQ(s["vm"]["cmma_decoded"]["counts"]["potentially_volatile"], 1);
  EXPECT_EQ(s["vm"]["cmma_decoded"]["counts"]["volatile"], 1);
  EXPECT_EQ(s["vm"]["skeys_decoded"]["referenced"], 16);
  EXPECT_EQ(s["vm"]["skeys_decoded"]["runs"][3]["access_key"], 3);
  EXPECT_EQ(s["vm"]["skeys_decoded"]["runs"][3]["changed"], true);
  json pp = InspectJson(g + "ppc64.vmsnap");
  EXPECT_EQ(pp["memory"]["page_size"], 65536);
  const json& e = pp["vm"]["htab"]["entries"];
  ASSERT_EQ(e.size(), 3u);
  EXPECT_EQ(e[0]["bolted"], true);
  EXPECT_EQ(e[1]["index"], 8);
  EXPECT_EQ(e[1]["bolted"], false);
  EXPECT_EQ(e[1]["valid"], true);
  EXPECT_EQ(e[2]["index"], 4095);
  EXPECT_EQ(e[2]["pp"], "0x3");

  struct Bad {
    const char* file;
    const char* message;
    int status;  // 1: read and found corrupt; 2: could not be read as a whole
  };
  for (Bad f : {Bad{"bad-chunk-checksum.vmsnap", "chunk 1 (gpa 0x8000-0xffff) at file offset 0x2000: checksum mismatch", 1},
                Bad{"bad-magic.vmsnap", "bad magic", 1},
                Bad{"bad-manifest-checksum.vmsnap", "manifest at file offset", 1},
                Bad{"missing-parent.vmsnap", "is missing", 2},
                Bad{"newer-major.vmsnap", "unsupported format version 2.0", 2},
                Bad{"truncated.vmsnap", "footer", 1}}) {
    std::string p = g + f.file;
    if (!fs::exists(p)) continue;
    RunResult r = Run("verify " + Quote(p));
    EXPECT_EQ(r.status, f.status) << p << ": " << r.err;
    EXPECT_NE(r.err.find(f.message), std::string::npos) << p << ": " << r.err;
    EXPECT_NE(r.err.find(f.file), std::string::npos) << r.err;
  }
}

// Every single-byte change to a snapshot is found by verify: the header,
// manifest and footer bytes and a dense sample of the chunk bytes (each
// covered by a checksum), and every byte between them (padding, which only
// the layout check covers). In-process, through the same VerifyAll the CLI
// runs; a few through the binary for the exit status.
TEST_F(ToolsCli, VerifyFindsEveryChangedByte) {
  Memory mem = BaseMemory();
  std::string a = Path("a.vmsnap");
  ASSERT_TRUE(Write(a, {}, mem).ok());
  const std::vector<uint8_t> good = ReadFile(a);
  auto rd = SnapshotReader::Open(a);
  ASSERT_TRUE(rd.ok());
  std::vector<bool> in_chunk(good.size(), false);
  for (const ChunkInfo& c : rd.value()->chunk_index()) {
    for (uint64_t o = c.file_offset; o < c.file_offset + c.stored_length; ++o) in_chunk[o] = true;
  }
  std::vector<uint8_t> bad = good;
  size_t tried = 0, padding = 0;
  std::vector<size_t> missed;
  for (size_t off = 0; off < good.size(); ++off) {
    if (in_chunk[off] && off % 61 != 0) continue;
    padding += !in_chunk[off] && good[off] == 0;
    for (uint8_t x : {uint8_t(0x01), uint8_t(0x80)}) {
      bad[off] = good[off] ^ x;
      ++tried;
      auto r = SnapshotReader::OpenBuffer(bad, "bad");
      if (r.ok() && r.value()->VerifyAll().ok()) missed.push_back(off);
    }
    bad[off] = good[off];
  }
  EXPECT_GT(padding, 1000u);  // the sample really covers the padding
  EXPECT_TRUE(missed.empty()) << missed.size() << " of " << tried << " changes pass, first at offset " << missed[0];

  // Through the binary: a changed padding byte is corrupt (1), with its offset.
  size_t pad_off = 0;
  for (size_t o = 64; o < good.size(); ++o) {
    if (!in_chunk[o]) { pad_off = o; break; }
  }
  bad[pad_off] = 0x5a;
  std::string b = Path("bad.vmsnap");
  WriteFile(b, bad);
  RunResult r = Run("verify " + Quote(b));
  EXPECT_EQ(r.status, 1) << r.err;
  char hex[32];
  std::snprintf(hex, sizeof hex, "0x%zx", pad_off);
  EXPECT_NE(r.err.find(hex), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("padding"), std::string::npos) << r.err;
}

TEST_F(ToolsCli, VerifyExitStatusTellsCorruptFromUnreadable) {
  Memory mem = BaseMemory();
  std::string a = Path("a.vmsnap");
  ASSERT_TRUE(Write(a, {}, mem).ok());
  EXPECT_EQ(Run("verify " + Quote(a)).status, 0);
  EXPECT_EQ(Run("verify").status, 2);                                  // usage
  EXPECT_EQ(Run("verify " + Quote(Path("missing.vmsnap"))).status, 2);  // unreadable
  EXPECT_EQ(Run("verify " + Quote(dir_)).status, 2);                    // a directory
  // A FIFO is refused at once, never waited on.
  std::string fifo = Path("p");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  for (const std::string& cmd : std::vector<std::string>{"verify", "inspect", "diff " + Quote(a), "flatten",
                                                          "export --format raw -o x"}) {
    std::string args = cmd + " " + Quote(fifo);
    if (cmd == "flatten") args += " -o " + Quote(Path("f.vmsnap"));
    RunResult r = Run(args);
    EXPECT_EQ(r.status, 2) << cmd << ": " << r.err;
    EXPECT_NE(r.err.find("FIFO"), std::string::npos) << cmd << ": " << r.err;
  }
  RunResult r = Run("inspect -");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("standard input"), std::string::npos) << r.err;
  EXPECT_EQ(Run("verify - < " + Quote(a)).status, 2);
}

// Outputs never destroy: special files are written through or refused, an
// input is never an output, '-' is standard output only for streams, and a
// failed write names the user's path.
TEST_F(ToolsCli, OutputsNeverReplaceSpecialFilesOrInputs) {
  Memory base = BaseMemory();
  std::string p = Path("base.vmsnap"), c = Path("child.vmsnap");
  auto pid = Write(p, {}, base);
  ASSERT_TRUE(pid.ok());
  Memory now = base;
  now.Fill(0x2000, 0x77);
  auto cid = Write(c, {}, now, &p, &pid.value(), {0x2000});
  ASSERT_TRUE(cid.ok());
  const auto parent_bytes = ReadFile(p), child_bytes = ReadFile(c);

  // A symlink to a character device: raw is written through, the link stays.
  std::string link = Path("null-link");
  ASSERT_EQ(::symlink("/dev/null", link.c_str()), 0);
  RunResult r = Run("export " + Quote(c) + " --format raw -o " + Quote(link));
  EXPECT_EQ(r.status, 0) << r.err;
  struct stat st;
  ASSERT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  ASSERT_EQ(::stat("/dev/null", &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  // ... and a snapshot or an ELF core (read by seeking) is refused there.
  for (const std::string& cmd : {"flatten " + Quote(c), "export " + Quote(c) + " --format elf"}) {
    r = Run(cmd + " -o " + Quote(link));
    EXPECT_EQ(r.status, 2) << cmd;
    EXPECT_NE(r.err.find("character device"), std::string::npos) << r.err;
    ASSERT_EQ(::lstat(link.c_str(), &st), 0);
    EXPECT_TRUE(S_ISLNK(st.st_mode));
  }
  // A FIFO: raw streams into it; flatten refuses it (and does not block).
  std::string fifo = Path("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  r = Run("flatten " + Quote(c) + " -o " + Quote(fifo));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("FIFO"), std::string::npos) << r.err;
  r = Run("export " + Quote(c) + " --format raw -o " + Quote(fifo) + " & cat " + Quote(fifo) + " | wc -c; wait");
  EXPECT_EQ(r.out, std::to_string(kHighBase + (256 << 10)) + "\n") << r.err;
  ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));

  // '-': standard output for raw and lime, refused for the others.
  r = Run("export " + Quote(c) + " --format lime -o - | wc -c");
  EXPECT_EQ(r.out, std::to_string(32 * 2 + (1 << 20) + (256 << 10)) + "\n") << r.err;
  r = Run("read " + Quote(c) + " --gpa 0x2000 --len 16 --format raw -o - | od -An -tx1 | tr -d ' \\n'");
  EXPECT_EQ(r.out, std::string(32, '7')) << r.err;
  for (const std::string& cmd : {"flatten " + Quote(c), "export " + Quote(c) + " --format elf"}) {
    r = Run(cmd + " -o -");
    EXPECT_EQ(r.status, 2) << cmd;
    EXPECT_NE(r.err.find("standard output"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists("-"));

  // The input, or its parent, as the output.
  r = Run("export " + Quote(c) + " --format raw -o " + Quote(c));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("reads"), std::string::npos) << r.err;
  r = Run("flatten " + Quote(c) + " -o " + Quote(p));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("base.vmsnap"), std::string::npos) << r.err;
  std::string plink = Path("parent-link.vmsnap");
  ASSERT_EQ(::symlink(p.c_str(), plink.c_str()), 0);
  EXPECT_EQ(Run("export " + Quote(c) + " --format raw -o " + Quote(plink)).status, 2);
  EXPECT_EQ(ReadFile(p), parent_bytes);
  EXPECT_EQ(ReadFile(c), child_bytes);

  // Errors name the user's path, never the temporary.
  std::string nodir = Path("no/such/dir/out.raw");
  r = Run("export " + Quote(c) + " --format raw -o " + Quote(nodir));
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find(nodir), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(".tmp-"), std::string::npos) << r.err;

  // A temporary left by a killed writer is removed by the next write there.
  std::string out = Path("out.raw"), stale = Path(".out.raw.tmp-0badf00d");
  WriteFile(stale, {1, 2, 3});
  r = Run("export " + Quote(c) + " --format raw -o " + Quote(out));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_FALSE(fs::exists(stale));
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
  }
}

TEST_F(ToolsCli, CommandLineEdges) {
  RunResult r = Run("bogus");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("'bogus'"), std::string::npos) << r.err;
  r = Run("--version");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("vmsnap "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("library "), std::string::npos) << r.out;
  const std::string format = "file format " + std::to_string(layout::kMajor) + "." + std::to_string(layout::kMinor);
  EXPECT_NE(r.out.find(format), std::string::npos) << r.out;

  Memory mem = BaseMemory();
  std::string a = Path("a.vmsnap");
  ASSERT_TRUE(Write(a, {}, mem).ok());
  r = Run("verify --progress " + Quote(a));
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.err.find("verifying"), std::string::npos) << r.err;
  r = Run("verify -q " + Quote(a));
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.err, "");
  for (const char* cmd : {"run", "load", "save", "inspect", "diff", "flatten", "export", "read", "translate"}) {
    r = Run(std::string(cmd) + " --help");
    EXPECT_NE(r.out.find("--quiet"), std::string::npos) << cmd;
    EXPECT_NE(r.out.find("--progress"), std::string::npos) << cmd;
  }
}

// A chain over 8 GiB of guest memory in four regions (sparse: a few stored
// pages, so the manifests are small): each 1 MiB window of diff, flatten and
// export looks the region list up again, which once exhausted Cap'n Proto's
// read budget (64 times the manifest's size) and aborted the command.
TEST_F(ToolsCli, LargeSparseSnapshotsAreReadWholeByEveryCommand) {
  std::string a = Path("big.vmsnap"), b = Path("big-child.vmsnap");
  std::vector<uint8_t> page(kPage, 0x5a);
  auto write = [&](const std::string& path, const layout::SnapshotId* parent) -> Result<layout::SnapshotId> {
    WriterOptions o;
    o.threads = 1;
    VMSNAP_ASSIGN_OR_RETURN(auto w, SnapshotWriter::Create(path, o));
    FillX86(w->manifest(), {});
    // Four regions of 2 GiB with holes between them, as a VM with devices
    // mapped in between has.
    auto regions = w->manifest().getMemory().initRegions(4);
    for (unsigned i = 0; i < 4; ++i) {
      regions[i].setSlot(i);
      regions[i].setGuestPhysAddr(uint64_t(i) * (4ull << 30));
      regions[i].setSize(2ull << 30);
    }
    if (parent) {
      auto p = w->manifest().initParent();
      p.setSnapshotId(capnp::Data::Reader(parent->data(), parent->size()));
      p.setPath("big.vmsnap");
      p.setDepth(1);
      uint8_t defined = 1;
      VMSNAP_RETURN_IF_ERROR(w->AddPages(0x200000, page.data(), kPage, &defined));
    } else {
      VMSNAP_RETURN_IF_ERROR(w->AddMemory(0x100000, page.data(), kPage));
      VMSNAP_RETURN_IF_ERROR(w->AddMemory((14ull << 30) - kPage, page.data(), kPage));
    }
    VMSNAP_RETURN_IF_ERROR(w->Commit());
    return w->id();
  };
  auto id = write(a, nullptr);
  ASSERT_TRUE(id.ok()) << id.status().message();
  ASSERT_TRUE(write(b, &id.value()).ok());
  EXPECT_EQ(Run("verify " + Quote(b)).status, 0);
  RunResult r = Run("diff " + Quote(a) + " " + Quote(b));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_EQ(r.err, "");
  r = Run("export " + Quote(b) + " --format elf -o " + Quote(Path("big.elf")));
  EXPECT_EQ(r.status, 0) << r.err;
  r = Run("flatten " + Quote(b) + " -o " + Quote(Path("flat.vmsnap")));
  EXPECT_EQ(r.status, 0) << r.err;
  r = Run("diff " + Quote(b) + " " + Quote(Path("flat.vmsnap")));
  EXPECT_EQ(r.status, 0) << r.err;
}

// SIGINT, SIGTERM and SIGKILL sent to a running flatten and export: the old
// output stays byte for byte; after SIGINT/SIGTERM no temporary remains, after
// SIGKILL the one left is named .NAME.tmp-XXXXXXXX and the next write there
// removes it.
TEST_F(ToolsCli, SignalsLeaveTheOldOutputIntact) {
  // In a cross build vmsnap runs under qemu-user, which receives the signals
  // first: the test would measure the emulator's signal handling, not ours.
  // The code under test is host-independent and runs natively in every build.
  if (VMSNAP_EMULATED) GTEST_SKIP() << "vmsnap runs under an emulator here";
  std::string big = Path("big.vmsnap");
  {
    WriterOptions o;
    o.threads = 1;
    o.compression = schema::Compression::NONE;
    auto w = SnapshotWriter::Create(big, o);
    ASSERT_TRUE(w.ok());
    FillX86(w.value()->manifest(), {});
    auto regions = w.value()->manifest().getMemory().initRegions(1);
    regions[0].setGuestPhysAddr(0);
    regions[0].setSize(256 << 20);
    std::vector<uint8_t> mem(256 << 20);
    for (size_t i = 0; i < mem.size(); i += 8) mem[i] = uint8_t(i >> 12 | 1);
    ASSERT_TRUE(w.value()->AddMemory(0, mem.data(), mem.size()).ok());
    ASSERT_TRUE(w.value()->Commit().ok());
  }
  auto temporaries = [&](const std::string& name) {
    std::vector<std::string> t;
    for (const auto& e : fs::directory_iterator(dir_)) {
      const std::string f = e.path().filename().string();
      if (f.rfind("." + name + ".tmp-", 0) == 0) t.push_back(f);
    }
    return t;
  };
  struct Case {
    std::vector<std::string> args;
    std::string out;
  };
  for (const Case& c : {Case{{"flatten", big, "-o", Path("out.vmsnap")}, "out.vmsnap"},
                        Case{{"export", big, "--format", "lime", "-o", Path("out.lime")}, "out.lime"}}) {
    const std::vector<uint8_t> old = {'o', 'l', 'd'};
    WriteFile(Path(c.out), old);
    for (int sig : {SIGINT, SIGTERM, SIGKILL}) {
      pid_t pid = ::fork();
      if (pid == 0) {
        std::vector<char*> argv{const_cast<char*>(VMSNAP_BIN)};
        for (const auto& a : c.args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execv(VMSNAP_BIN, argv.data());
        _exit(127);
      }
      // Signalled once its temporary exists, i.e. in the middle of writing.
      for (int i = 0; i < 20000 && temporaries(c.out).empty(); ++i) ::usleep(500);
      ::kill(pid, sig);
      int st = 0;
      ::waitpid(pid, &st, 0);
      EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == sig) << c.out << " signal " << sig << " status " << st;
      EXPECT_EQ(ReadFile(Path(c.out)), old) << c.out << " signal " << sig;
      auto left = temporaries(c.out);
      if (sig == SIGKILL) {
        ASSERT_EQ(left.size(), 1u) << c.out;
        EXPECT_EQ(left[0].size(), c.out.size() + 6 + 8) << left[0];
      } else {
        EXPECT_TRUE(left.empty()) << c.out << " signal " << sig << ": " << left[0];
      }
    }
    // The next write to that path removes the killed writer's temporary.
    std::string cmd;
    for (const auto& a : c.args) cmd += " " + Quote(a);
    RunResult r = Run(cmd.substr(1) + " -q");
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(temporaries(c.out).empty()) << c.out;
    EXPECT_NE(ReadFile(Path(c.out)), old);
  }
}

}  // namespace
}  // namespace vmsnap
