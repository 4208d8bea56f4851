// SPDX-License-Identifier: MIT
// The forensic subcommands as a user runs them: snapshots with hand-built page
// tables (4- and 5-level; 4 KiB, 2 MiB and 1 GiB pages) are written with the
// SnapshotWriter, then `vmsnap read`, `translate` and `export` are run and their
// output checked byte for byte, with readelf and with gdb.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "base/hex.h"
#include "format/reader.h"
#include "format/writer.h"
#include "tests/forensics/shell.h"

namespace vmsnap {
namespace {

constexpr uint64_t kRam0 = 16ull << 20;       // region 0: [0, 16 MiB)
constexpr uint64_t kRam1Base = 32ull << 20;   // region 1: [32 MiB, 33 MiB), a hole before it
constexpr uint64_t kRam1 = 1ull << 20;

constexpr uint64_t kP = 1, kRW = 2, kPS = 0x80;
constexpr uint64_t kCr0 = 0x80000011, kCr4Pae = 1 << 5, kCr4La57 = 1 << 12, kEfer = 0x500;

// Virtual addresses the tests map, and where.
constexpr uint64_t kGva4K = 0x00007f1234567000;    // 4 KiB page -> gpa 0x300000
constexpr uint64_t kGva4KNext = kGva4K + 0x1000;   // next 4 KiB page -> gpa 0x2000000 (region 1)
constexpr uint64_t kGvaUnmapped = kGva4K + 0x2000; // PT entry left empty
constexpr uint64_t kGvaOutside = kGva4K + 0x3000;  // maps gpa 0x1800000, in the hole
constexpr uint64_t kGva2M = 0x0000555540000000;    // 2 MiB page -> gpa 0x400000
constexpr uint64_t kGva1G = 0xffff888000000000;    // 1 GiB page -> gpa 0
constexpr uint64_t kGvaNoPml4 = 0x0000100000000000; // PML4 entry left empty

// Guest memory under construction, with a page-table builder.
struct Image {
  std::vector<uint8_t> ram0 = std::vector<uint8_t>(kRam0);
  std::vector<uint8_t> ram1 = std::vector<uint8_t>(kRam1);
  uint64_t next_table = 0x10000;

  uint8_t* At(uint64_t gpa) {
    if (gpa >= kRam1Base) return ram1.data() + (gpa - kRam1Base);
    return ram0.data() + gpa;
  }
  void Put64(uint64_t gpa, uint64_t v) {
    for (int i = 0; i < 8; ++i) At(gpa)[i] = static_cast<uint8_t>(v >> (8 * i));
  }
  uint64_t Get64(uint64_t gpa) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t{At(gpa)[i]} << (8 * i);
    return v;
  }
  void Fill(uint64_t gpa, const std::string& s) { std::memcpy(At(gpa), s.data(), s.size()); }
  uint64_t NewTable() {
    uint64_t t = next_table;
    next_table += 0x1000;
    return t;
  }
  // Maps [gva, gva+size) to gpa with a page of `size` under a `levels`-level root.
  void Map(uint64_t root, int levels, uint64_t gva, uint64_t gpa, uint64_t size) {
    uint64_t table = root;
    for (int l = levels; l >= 1; --l) {
      const unsigned shift = 12 + 9 * (l - 1);
      const uint64_t entry = table + 8 * ((gva >> shift) & 511);
      if (size == (1ull << shift)) {
        Put64(entry, gpa | kP | kRW | (l > 1 ? kPS : 0));
        return;
      }
      uint64_t e = Get64(entry);
      if (!(e & kP)) {
        e = NewTable() | kP | kRW;
        Put64(entry, e);
      }
      table = e & 0x000ffffffffff000ull;
    }
  }
};

std::string TempDir() {
  char tmpl[] = "/tmp/vmsnap-forensics-XXXXXX";
  const char* d = mkdtemp(tmpl);
  return d ? d : "/tmp";
}

void SetRegs(schema::x86::Vcpu::Builder x, uint64_t cr3, uint64_t cr4, uint64_t seed) {
  auto r = x.initRegs();
  r.setRax(0xa0a0a0a000000000 + seed);
  r.setRbx(0xb0b0b0b000000000 + seed);
  r.setRcx(0xc0c0c0c000000000 + seed);
  r.setRdx(0xd0d0d0d000000000 + seed);
  r.setRsi(0x51);
  r.setRdi(seed);
  r.setRsp(0x7ffc0000 + seed * 0x1000);
  r.setRbp(0x7ffc8000);
  r.setR8(0x8888);
  r.setR15(0x1515151515151515);
  r.setRip(0xffffffff81000000 + seed);
  r.setRflags(0x246);
  auto s = x.initSregs();
  s.initCs().setSelector(0x08);
  s.initSs().setSelector(0x10);
  s.initDs().setSelector(0x10);
  s.initEs().setSelector(0x10);
  s.initFs().setBase(0x7f0000001000);
  s.initGs().setBase(0xffff888000100000);
  s.setCr0(kCr0);
  s.setCr3(cr3);
  s.setCr4(cr4);
  s.setEfer(kEfer);
  // An XSAVE area with x87/SSE in use: MXCSR's reset value and XMM0 = {seed + 0x1111222233334444,
  // 0x5555666677778888}, which gdb must find through the FPU and XSAVE notes.
  std::vector<uint8_t> area(4096, 0);
  auto put = [&](size_t at, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) area[at + i] = static_cast<uint8_t>(v >> (8 * i));
  };
  put(0, 0x37f, 2);      // FCW
  put(24, 0x1f80, 4);    // MXCSR
  put(160, 0x1111222233334444 + seed, 8);
  put(168, 0x5555666677778888, 8);
  put(512, 3, 8);        // XSTATE_BV: x87 and SSE
  x.setXsave(capnp::Data::Reader(area.data(), area.size()));
  auto xcr = x.initXcrs(1);
  xcr[0].setXcr(0);
  xcr[0].setValue(3);
}

// Writes `image` as a full x86_64 snapshot with `vcpus` vCPUs all using `cr3`.
void WriteSnapshot(const std::string& path, Image& image, uint64_t cr3, uint64_t cr4, int vcpus,
                   schema::Compression compression = schema::Compression::ZSTD) {
  WriterOptions opt;
  opt.compression = compression;
  opt.threads = 1;
  auto w = SnapshotWriter::Create(path, opt);
  ASSERT_TRUE(w.ok()) << w.status().message();
  auto m = (*w)->manifest();
  m.setArch(schema::Arch::X8664);
  auto mem = m.initMemory();
  mem.setPageSize(4096);
  auto regions = mem.initRegions(2);
  regions[0].setSlot(0);
  regions[0].setGuestPhysAddr(0);
  regions[0].setSize(kRam0);
  regions[0].setName("ram");
  regions[1].setSlot(1);
  regions[1].setGuestPhysAddr(kRam1Base);
  regions[1].setSize(kRam1);
  regions[1].setName("high");
  auto vl = m.initVcpus(vcpus);
  for (int i = 0; i < vcpus; ++i) {
    vl[i].setId(i);
    SetRegs(vl[i].initX8664(), cr3, cr4, i);
  }
  m.initVm().initX8664();
  ASSERT_TRUE((*w)->AddMemory(0, image.ram0.data(), kRam0).ok());
  ASSERT_TRUE((*w)->AddMemory(kRam1Base, image.ram1.data(), kRam1).ok());
  Status s = (*w)->Commit();
  ASSERT_TRUE(s.ok()) << s.message();
}

using forensics_test::RunResult;
using forensics_test::Shell;
using forensics_test::Slurp;

RunResult Vmsnap(const std::string& dir, const std::string& args) {
  return Shell(dir, std::string(VMSNAP_BIN) + " " + args);
}

void RmRf(const std::string& dir) {
  if (std::system(("rm -rf " + dir).c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", dir.c_str());
}

bool HaveTool(const char* name) {
  return std::system((std::string("command -v ") + name + " >/dev/null 2>&1").c_str()) == 0;
}

class ForensicsCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir());
    image4_ = new Image();
    Image& im = *image4_;
    const uint64_t pml4 = im.NewTable();
    im.Map(pml4, 4, kGva4K, 0x300000, 0x1000);
    im.Map(pml4, 4, kGva4KNext, kRam1Base, 0x1000);
    im.Map(pml4, 4, kGvaOutside, 0x1800000, 0x1000);
    im.Map(pml4, 4, kGva2M, 0x400000, 2ull << 20);
    im.Map(pml4, 4, kGva1G, 0, 1ull << 30);
    im.Fill(0x300000, "four KiB page: the quick brown fox");
    im.Fill(0x300ff8, "ABCDEFGH");          // last 8 bytes of the 4 KiB page
    im.Fill(kRam1Base, "IJKLMNOP");         // first 8 of the next virtual page
    im.Fill(0x400000 + 0x1234, "two MiB page, offset 0x1234");
    im.Fill(0x500000, "one GiB page, offset 0x500000");
    for (int i = 0; i < 8; ++i) im.Put64(0x600000 + 8 * i, 0x1111111111111111ull * (i + 1));
    pml4_ = pml4;
    snap4_ = new std::string(*dir_ + "/four.vmsnap");
    WriteSnapshot(*snap4_, im, pml4, kCr4Pae, 2);
  }
  static void TearDownTestSuite() {
    RmRf(*dir_);
    delete dir_;
    delete image4_;
    delete snap4_;
  }
  static std::string* dir_;
  static Image* image4_;
  static std::string* snap4_;
  static uint64_t pml4_;
};
std::string* ForensicsCli::dir_;
Image* ForensicsCli::image4_;
std::string* ForensicsCli::snap4_;
uint64_t ForensicsCli::pml4_;

TEST_F(ForensicsCli, ReadGvaThroughEachPageSize) {
  auto r = Vmsnap(*dir_, "read " + *snap4_ + " --gva " + Hex(kGva4K) + " --len 34 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "four KiB page: the quick brown fox");
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gva " + Hex(kGva2M + 0x1234) + " --len 27 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "two MiB page, offset 0x1234");
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gva " + Hex(kGva1G + 0x500000) + " --len 29 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "one GiB page, offset 0x500000");
  // vCPU 1 shares the tables.
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gva " + Hex(kGva4K) + " --vcpu 1 --len 4 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "four");
}

TEST_F(ForensicsCli, ReadAcrossAPageBoundaryTranslatesEachPage) {
  // The two virtual pages map to physical frames 30 MiB apart.
  auto r = Vmsnap(*dir_, "read " + *snap4_ + " --gva " + Hex(kGva4K + 0xff8) + " --len 16 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "ABCDEFGHIJKLMNOP");
}

TEST_F(ForensicsCli, ReadGpaAndHexdump) {
  auto r = Vmsnap(*dir_, "read " + *snap4_ + " --gpa 0x300000 --len 20");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out,
            "0000000000300000  66 6f 75 72 20 4b 69 42  20 70 61 67 65 3a 20 74  |four KiB page: t|\n"
            "0000000000300010  68 65 20 71                                       |he q|\n");
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gpa " + Hex(kRam1Base) + " --len 8 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "IJKLMNOP");
}

TEST_F(ForensicsCli, NonPresentEntryNamesLevelAndAddress) {
  // The PT that maps kGva4K is the 4th table allocated (PML4, PDPT, PD, PT).
  const uint64_t pt = pml4_ + 3 * 0x1000;
  const uint64_t index = (kGvaUnmapped >> 12) & 511;
  auto r = Vmsnap(*dir_, "read " + *snap4_ + " --gva " + Hex(kGvaUnmapped) + " --len 8");
  EXPECT_EQ(r.exit, 2);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "vmsnap read: gva " + Hex(kGvaUnmapped) + " is not mapped: PT entry " +
                       std::to_string(index) + " at gpa " + Hex(pt + 8 * index) +
                       " is 0x0000000000000000 (not present)\n");
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gva " + Hex(kGvaNoPml4) + " --len 8");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("PML4 entry 32 at gpa " + Hex(pml4_ + 8 * 32)), std::string::npos) << r.err;
}

TEST_F(ForensicsCli, BadInputIsAClearErrorWithExit2) {
  // Physical address in the hole between the regions, and past the end.
  auto r = Vmsnap(*dir_, "read " + *snap4_ + " --gpa 0x1800000 --len 8");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("0x1800000 is outside guest memory"), std::string::npos) << r.err;
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gpa 0xfffff8 --len 16");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("0x1000000 is outside guest memory"), std::string::npos) << r.err;
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gpa 0x10000000000 --len 1");
  EXPECT_EQ(r.exit, 2);
  // A virtual page that maps into the hole.
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gva " + Hex(kGvaOutside) + " --len 8");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("outside guest memory"), std::string::npos) << r.err;
  // vCPU out of range.
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gva " + Hex(kGva4K) + " --vcpu 2 --len 8");
  EXPECT_EQ(r.exit, 2);
  EXPECT_EQ(r.err, "vmsnap read: vCPU 2 is out of range (the snapshot has 2 vCPUs)\n");
  r = Vmsnap(*dir_, "translate " + *snap4_ + " --gva " + Hex(kGva4K) + " --vcpu 7");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("vCPU 7 is out of range"), std::string::npos) << r.err;
  // Non-canonical address.
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gva 0x0000800000000000 --len 8");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("not canonical"), std::string::npos) << r.err;
  // Usage errors.
  r = Vmsnap(*dir_, "read " + *snap4_ + " --len 8");
  EXPECT_EQ(r.exit, 2);
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gpa zz --len 8");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("bad --gpa 'zz'"), std::string::npos) << r.err;
  r = Vmsnap(*dir_, "read " + *dir_ + "/missing.vmsnap --gpa 0 --len 8");
  EXPECT_EQ(r.exit, 2);
  EXPECT_FALSE(r.err.empty());
}

TEST_F(ForensicsCli, TranslatePrintsEveryLevel) {
  auto r = Vmsnap(*dir_, "translate " + *snap4_ + " --gva " + Hex(kGva4K + 0x10));
  ASSERT_EQ(r.exit, 0) << r.err;
  for (const char* level : {"PML4", "PDPT", "PD ", "PT "}) {
    EXPECT_NE(r.out.find(std::string("  ") + level), std::string::npos) << level << "\n" << r.out;
  }
  EXPECT_NE(r.out.find("table " + Hex(pml4_)), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("gpa 0x300010  (4 KiB page at 0x300000)"), std::string::npos) << r.out;

  r = Vmsnap(*dir_, "translate " + *snap4_ + " --gva " + Hex(kGva1G + 0x500000) + " --json");
  ASSERT_EQ(r.exit, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["mode"], "4-level");
  ASSERT_EQ(j["steps"].size(), 2u);
  EXPECT_EQ(j["steps"][0]["level"], "PML4");
  EXPECT_EQ(j["steps"][1]["level"], "PDPT");
  EXPECT_NE(j["steps"][1]["flags"].get<std::string>().find("PS"), std::string::npos);
  EXPECT_EQ(j["gpa"], "0x500000");
  EXPECT_EQ(j["page_size"], 1ull << 30);

  r = Vmsnap(*dir_, "translate " + *snap4_ + " --gva " + Hex(kGva2M) + " --json");
  ASSERT_EQ(r.exit, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["steps"].size(), 3u);
  EXPECT_EQ(j["page_size"], 2ull << 20);

  r = Vmsnap(*dir_, "translate " + *snap4_ + " --gva " + Hex(kGvaUnmapped) + " --json");
  EXPECT_EQ(r.exit, 2);
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["mapped"], false);
  EXPECT_EQ(j["fault"]["level"], "PT");
}

TEST(ForensicsCli5, FiveLevelPagingWithEachPageSize) {
  const std::string dir = TempDir();
  Image im;
  const uint64_t pml5 = im.NewTable();
  // Addresses that need the fifth level: bits 56..48 are non-zero.
  const uint64_t g4k = 0x00ab123456789000, g2m = 0x0012345640000000 + (2ull << 20),
                 g1g = 0xff54321040000000;
  im.Map(pml5, 5, g4k, 0x700000, 0x1000);
  im.Map(pml5, 5, g2m, 0x800000, 2ull << 20);
  im.Map(pml5, 5, g1g, 0, 1ull << 30);
  im.Fill(0x700abc, "five-level 4K");
  im.Fill(0x800000 + 0x54321, "five-level 2M");
  im.Fill(0x900000, "five-level 1G");
  const std::string snap = dir + "/five.vmsnap";
  WriteSnapshot(snap, im, pml5, kCr4Pae | kCr4La57, 1);
  auto r = Vmsnap(dir, "read " + snap + " --gva " + Hex(g4k + 0xabc) + " --len 13 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "five-level 4K");
  r = Vmsnap(dir, "read " + snap + " --gva " + Hex(g2m + 0x54321) + " --len 13 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "five-level 2M");
  r = Vmsnap(dir, "read " + snap + " --gva " + Hex(g1g + 0x900000) + " --len 13 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "five-level 1G");
  r = Vmsnap(dir, "translate " + snap + " --gva " + Hex(g4k) + " --json");
  ASSERT_EQ(r.exit, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["mode"], "5-level");
  ASSERT_EQ(j["steps"].size(), 5u);
  EXPECT_EQ(j["steps"][0]["level"], "PML5");
  EXPECT_EQ(j["steps"][0]["index"], (g4k >> 48) & 511);
  // Unmapped at the top level.
  r = Vmsnap(dir, "read " + snap + " --gva 0x0001000000000000 --len 1");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("PML5 entry 1 at gpa " + Hex(pml5 + 8)), std::string::npos) << r.err;
  RmRf(dir);
}

// The expected raw image: region 0, a zero hole, region 1.
std::string ExpectedRaw(Image& im) {
  std::string s(kRam1Base + kRam1, '\0');
  std::memcpy(s.data(), im.ram0.data(), kRam0);
  std::memcpy(s.data() + kRam1Base, im.ram1.data(), kRam1);
  return s;
}

TEST_F(ForensicsCli, ExportRawIsPhysicalMemoryByteForByteAndSparse) {
  const std::string out = *dir_ + "/mem.raw";
  auto r = Vmsnap(*dir_, "export " + *snap4_ + " --format raw -o " + out);
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_TRUE(Slurp(out) == ExpectedRaw(*image4_));
  struct stat st {};
  ASSERT_EQ(stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kRam1Base + kRam1);
  // Almost all of it is zero: holes, not written blocks.
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 4ull << 20);
}

TEST_F(ForensicsCli, ExportLimeIsHeaderThenRegionPerRegion) {
  const std::string out = *dir_ + "/mem.lime";
  auto r = Vmsnap(*dir_, "export " + *snap4_ + " --format lime -o " + out);
  ASSERT_EQ(r.exit, 0) << r.err;
  auto header = [](uint64_t s, uint64_t e) {
    std::string h(32, '\0');
    const uint32_t words[2] = {0x4C694D45, 1};
    for (int i = 0; i < 4; ++i) h[i] = static_cast<char>(words[0] >> (8 * i));
    h[4] = 1;
    for (int i = 0; i < 8; ++i) h[8 + i] = static_cast<char>(s >> (8 * i));
    for (int i = 0; i < 8; ++i) h[16 + i] = static_cast<char>(e >> (8 * i));
    return h;
  };
  std::string expected = header(0, kRam0 - 1);
  expected.append(reinterpret_cast<const char*>(image4_->ram0.data()), kRam0);
  expected += header(kRam1Base, kRam1Base + kRam1 - 1);
  expected.append(reinterpret_cast<const char*>(image4_->ram1.data()), kRam1);
  const std::string got = Slurp(out);
  ASSERT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected);
  EXPECT_EQ(got.substr(0, 4), "EMiL");
}

TEST_F(ForensicsCli, ExportElfOpensInReadelfAndGdb) {
  if (!HaveTool("readelf") || !HaveTool("gdb")) GTEST_SKIP() << "readelf or gdb is not installed";
  const std::string out = *dir_ + "/core.elf";
  auto r = Vmsnap(*dir_, "export " + *snap4_ + " --format elf -o " + out);
  ASSERT_EQ(r.exit, 0) << r.err;
  struct stat st {};
  ASSERT_EQ(stat(out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  r = Shell(*dir_, "readelf -W -h -l -n " + out);
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_NE(r.out.find("CORE (Core file)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Advanced Micro Devices X86-64"), std::string::npos) << r.out;
  // One PT_NOTE, then one PT_LOAD per region with vaddr = paddr = gpa, filesz = memsz.
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(NOTE\s+0x[0-9a-f]+ 0x0+ 0x0+ 0x[0-9a-f]+ 0x0+ )")))
      << r.out;
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(LOAD\s+0x[0-9a-f]+ 0x0000000000000000 0x0000000000000000 0x0*1000000 0x0*1000000 RWE)")))
      << r.out;
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(LOAD\s+0x[0-9a-f]+ 0x0000000002000000 0x0000000002000000 0x0*100000 0x0*100000 RWE)")))
      << r.out;
  std::smatch m;
  size_t prstatus = 0;
  for (std::string s = r.out; std::regex_search(s, m, std::regex("NT_PRSTATUS")); s = m.suffix()) ++prstatus;
  EXPECT_EQ(prstatus, 2u) << r.out;
  // Each vCPU's FPU and XSAVE notes, then QEMU's CPU state notes (type 0).
  auto count = [&](const char* what) {
    size_t n = 0;
    for (std::string s = r.out; std::regex_search(s, m, std::regex(what)); s = m.suffix()) ++n;
    return n;
  };
  EXPECT_EQ(count("CORE +0x0+200\\s+NT_FPREGSET"), 2u) << r.out;
  EXPECT_EQ(count("LINUX +0x[0-9a-f]+\\s+NT_X86_XSTATE"), 2u) << r.out;
  EXPECT_EQ(count("QEMU +0x0+1b8\\s"), 2u) << r.out;

  r = Shell(*dir_, "gdb -batch -nx -c " + out +
                     " -ex 'info registers' -ex 'x/8gx 0x600000' -ex 'p/x $fs_base' -ex 'p/x $xmm0.v2_int64'"
                     " -ex 'thread 2' -ex 'info registers rip rdi' -ex 'p/x $xmm0.v2_int64'");
  ASSERT_EQ(r.exit, 0) << r.err;
  // vCPU 0's registers, as saved.
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(rax\s+0xa0a0a0a000000000)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(rbx\s+0xb0b0b0b000000000)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(rsp\s+0x7ffc0000)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(r15\s+0x1515151515151515)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(rip\s+0xffffffff81000000)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(eflags\s+0x246)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(cs\s+0x8)"))) << r.out;
  // gdb's `info registers` leaves fs_base out; it reads it from the note all the same.
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(\$1 = 0x7f0000001000)"))) << r.out;
  // The SSE registers come from each vCPU's own FPU/XSAVE notes.
  EXPECT_NE(r.out.find("$2 = {0x1111222233334444, 0x5555666677778888}"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("$3 = {0x1111222233334445, 0x5555666677778888}"), std::string::npos) << r.out;
  // Memory, found through p_vaddr = gpa.
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(0x600000:\s+0x1111111111111111\s+0x2222222222222222)"))) << r.out;
  EXPECT_TRUE(std::regex_search(
      r.out, std::regex(R"(0x600030:\s+0x7777777777777777\s+0x8888888888888888)"))) << r.out;
  // vCPU 1 is the second thread.
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(rip\s+0xffffffff81000001)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(rdi\s+0x1\b)"))) << r.out;
}

TEST_F(ForensicsCli, IncrementalSnapshotReadsAndExportsTheWholeChain) {
  // The child maps a new page (its PT page changes), writes it, and changes a
  // page the parent had; everything else comes from the parent.
  Image child = *image4_;
  const uint64_t pt = pml4_ + 3 * 0x1000;
  child.Map(pml4_, 4, kGvaUnmapped, 0x301000, 0x1000);
  child.Fill(0x301000, "mapped in the child");
  child.Put64(0x600000, 0xc41dc41dc41dc41d);
  const std::string path = *dir_ + "/child.vmsnap";
  {
    auto parent = SnapshotReader::Open(*snap4_);
    ASSERT_TRUE(parent.ok()) << parent.status().message();
    const layout::SnapshotId parent_id = (*parent)->id();
    WriterOptions opt;
    opt.threads = 1;
    auto w = SnapshotWriter::Create(path, opt);
    ASSERT_TRUE(w.ok()) << w.status().message();
    auto m = (*w)->manifest();
    m.setArch(schema::Arch::X8664);
    auto mem = m.initMemory();
    mem.setPageSize(4096);
    auto regions = mem.initRegions(2);
    regions[0].setGuestPhysAddr(0);
    regions[0].setSize(kRam0);
    regions[1].setSlot(1);
    regions[1].setGuestPhysAddr(kRam1Base);
    regions[1].setSize(kRam1);
    auto vl = m.initVcpus(1);
    SetRegs(vl[0].initX8664(), pml4_, kCr4Pae, 0);
    m.initVm().initX8664();
    auto p = m.initParent();
    p.setSnapshotId(capnp::Data::Reader(parent_id.data(), parent_id.size()));
    p.setPath("four.vmsnap");
    p.setDepth(1);
    std::vector<uint8_t> defined(kRam0 / 4096 / 8, 0);
    for (uint64_t g : {pt, uint64_t{0x301000}, uint64_t{0x600000}}) defined[g / 4096 / 8] |= 1 << (g / 4096 % 8);
    ASSERT_TRUE((*w)->AddPages(0, child.ram0.data(), kRam0, defined.data()).ok());
    Status st = (*w)->Commit();
    ASSERT_TRUE(st.ok()) << st.message();
  }
  auto r = Vmsnap(*dir_, "read " + path + " --gva " + Hex(kGvaUnmapped) + " --len 19 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "mapped in the child");
  r = Vmsnap(*dir_, "read " + path + " --gva " + Hex(kGva4K) + " --len 4 --format raw");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "four");  // from the parent
  r = Vmsnap(*dir_, "read " + *snap4_ + " --gva " + Hex(kGvaUnmapped) + " --len 1");
  EXPECT_EQ(r.exit, 2);  // still unmapped in the parent
  const std::string out = *dir_ + "/child.raw";
  r = Vmsnap(*dir_, "export " + path + " --format raw -o " + out);
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_TRUE(Slurp(out) == ExpectedRaw(child));
}

TEST_F(ForensicsCli, CorruptChunkIsReportedByReadAndExport) {
  // Copy the snapshot and flip a byte inside the chunk holding gpa 0x300000.
  const std::string bad = *dir_ + "/corrupt.vmsnap";
  {
    std::string bytes = Slurp(*snap4_);
    auto reader = SnapshotReader::Open(*snap4_);
    ASSERT_TRUE(reader.ok()) << reader.status().message();
    uint64_t offset = 0, len = 0;
    for (auto c : (*reader)->manifest().getChunks()) {
      if (c.getGuestPhysAddr() <= 0x300000 && 0x300000 < c.getGuestPhysAddr() + c.getPageCount() * 4096ull) {
        offset = c.getFileOffset();
        len = c.getStoredLength();
      }
    }
    ASSERT_GT(len, 0u);
    bytes[offset + len / 2] ^= 0x5a;
    std::ofstream(bad, std::ios::binary) << bytes;
  }
  auto r = Vmsnap(*dir_, "read " + bad + " --gpa 0x300000 --len 16");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("chunk"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  // Memory elsewhere still reads.
  r = Vmsnap(*dir_, "read " + bad + " --gpa " + Hex(kRam1Base) + " --len 8 --format raw");
  EXPECT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "IJKLMNOP");
  const std::string out = *dir_ + "/corrupt.raw";
  r = Vmsnap(*dir_, "export " + bad + " --format raw -o " + out);
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("chunk"), std::string::npos) << r.err;
  EXPECT_NE(access(out.c_str(), F_OK), 0) << "a failed export left its output behind";
}

TEST(ForensicsCliArch, GvaOnANonX86SnapshotIsRefused) {
  const std::string dir = TempDir();
  const std::string snap = dir + "/s390.vmsnap";
  {
    std::vector<uint8_t> ram(1 << 20);  // outlives the writer, which may read it until destroyed
    WriterOptions opt;
    opt.threads = 1;
    auto w = SnapshotWriter::Create(snap, opt);
    ASSERT_TRUE(w.ok()) << w.status().message();
    auto m = (*w)->manifest();
    m.setArch(schema::Arch::S390X);
    auto mem = m.initMemory();
    mem.setPageSize(4096);
    auto regions = mem.initRegions(1);
    regions[0].setSize(1 << 20);
    std::memcpy(ram.data() + 0x2000, "s390", 4);
    ASSERT_TRUE((*w)->AddMemory(0, ram.data(), ram.size()).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  auto r = Vmsnap(dir, "read " + snap + " --gva 0x1000 --len 8");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("only translated for x86_64 and aarch64 snapshots; this one is s390x"), std::string::npos) << r.err;
  r = Vmsnap(dir, "read " + snap + " --gpa 0x2000 --len 4 --format raw");
  EXPECT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "s390");
  // Its ELF core is big-endian s390 with no register notes.
  if (HaveTool("readelf")) {
    r = Vmsnap(dir, "export " + snap + " --format elf -o " + dir + "/s390.elf");
    ASSERT_EQ(r.exit, 0) << r.err;
    r = Shell(dir, "readelf -h -l " + dir + "/s390.elf");
    EXPECT_NE(r.out.find("big endian"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("IBM S/390"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("LOAD"), std::string::npos) << r.out;
  }
  RmRf(dir);
}

// An arm64 snapshot whose guest built 4K tables (TTBR1_EL1, 48-bit): read
// --gva and translate walk them, and the ELF core has arm64 register notes.
TEST(ForensicsCliArch, Aarch64GvaAndElfNotes) {
  const std::string dir = TempDir();
  const std::string snap = dir + "/arm64.vmsnap";
  {
    std::vector<uint8_t> ram(1 << 20);
    auto put = [&](uint64_t gpa, uint64_t v) {
      for (int i = 0; i < 8; ++i) ram[gpa + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    // 0xffff800000201234 -> L0[0x100] -> L1[0] -> L2[1] -> L3[1] -> 0x9000.
    put(0x1000 + 8 * 0x100, 0x2000 | 3);
    put(0x2000, 0x3000 | 3);
    put(0x3000 + 8, 0x4000 | 3);
    put(0x4000 + 8, 0x9000 | 3 | 0x400);
    std::memcpy(ram.data() + 0x9234, "arm64 kernel", 12);
    WriterOptions opt;
    opt.threads = 1;
    opt.format_minor = 1;
    auto w = SnapshotWriter::Create(snap, opt);
    ASSERT_TRUE(w.ok()) << w.status().message();
    auto m = (*w)->manifest();
    m.setArch(schema::Arch::AARCH64);
    auto mem = m.initMemory();
    mem.setPageSize(4096);
    mem.initRegions(1)[0].setSize(1 << 20);
    auto v = m.initVcpus(1)[0].initAarch64();
    auto core = v.initCore();
    core.initX(31).set(0, 0x1111);
    core.setPc(0xffff800000201234ull);
    core.setPstate(0x3c5);
    core.initSpsr(5);
    auto sr = v.initSysregs(3);
    sr[0].setId(0x603000000013c080ull);  // SCTLR_EL1, M
    sr[0].setValue(1);
    sr[1].setId(0x603000000013c102ull);  // TCR_EL1: T0SZ = T1SZ = 16, TG1 4K
    sr[1].setValue(16 | (16ull << 16) | (2ull << 30));
    sr[2].setId(0x603000000013c101ull);  // TTBR1_EL1
    sr[2].setValue(0x1000);
    ASSERT_TRUE((*w)->AddMemory(0, ram.data(), ram.size()).ok());
    ASSERT_TRUE((*w)->Commit().ok());
  }
  auto r = Vmsnap(dir, "read " + snap + " --gva 0xffff800000201234 --len 12 --format raw");
  EXPECT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(r.out, "arm64 kernel");
  r = Vmsnap(dir, "translate " + snap + " --gva 0xffff800000201234");
  EXPECT_EQ(r.exit, 0) << r.err;
  EXPECT_NE(r.out.find("paging 4K  TTBR1_EL1 0x1000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("gpa 0x9234"), std::string::npos) << r.out;
  r = Vmsnap(dir, "translate " + snap + " --gva 0xffff800000401234");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("L2 entry 2"), std::string::npos) << r.err;
  if (HaveTool("readelf")) {
    r = Vmsnap(dir, "export " + snap + " --format elf -o " + dir + "/arm64.elf");
    ASSERT_EQ(r.exit, 0) << r.err;
    r = Shell(dir, "readelf -h -n " + dir + "/arm64.elf");
    EXPECT_NE(r.out.find("AArch64"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("NT_PRSTATUS"), std::string::npos) << r.out;
  }
  RmRf(dir);
}

}  // namespace
}  // namespace vmsnap
