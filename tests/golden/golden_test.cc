// SPDX-License-Identifier: MIT
// Reads every committed golden file on every run: the promise that files
// written by this version stay readable, and that known-bad files keep
// failing with the same message. Also checks the generator still reproduces
// them byte for byte.
#include <gtest/gtest.h>

#include <cstring>

#include "format/chain.h"
#include "format/memory.h"
#include "format/reader.h"
#include "tests/format/test_util.h"
#include "tests/golden/golden_gen.h"

namespace vmsnap {
namespace {

const std::string kDir = VMSNAP_GOLDEN_DIR;
#define VMSNAP_GOLDEN_TRUNCATED \
  "footer at file offset 0x43b8: bad magic (file truncated or not a complete .vmsnap file)"
#define VMSNAP_GOLDEN_BAD_MANIFEST                                                  \
  "manifest at file offset 0x4038 (1920 bytes): checksum mismatch (footer says " \
  "0xd9c78b2d4e395d8a, computed 0x219d245635899e1f)"
#define VMSNAP_GOLDEN_BAD_CHUNK                                                   \
  "chunk 1 (gpa 0x8000-0xffff) at file offset 0x2000: checksum mismatch (manifest " \
  "says 0xa000d6d299f22999, computed 0x5f734c014895b885)"

std::unique_ptr<SnapshotReader> Open(const char* name) {
  auto r = SnapshotReader::Open(kDir + "/" + name);
  EXPECT_TRUE(r.ok()) << name << ": " << r.status().message();
  if (!r.ok()) return nullptr;
  EXPECT_TRUE((*r)->VerifyAll().ok()) << name;
  return std::move(r).value();
}

std::string PageText(const SnapshotChain& c, uint64_t gpa, size_t n) {
  std::vector<uint8_t> b(4096);
  EXPECT_TRUE(c.ReadMemory(gpa, b.size(), b.data()).ok());
  return std::string(reinterpret_cast<char*>(b.data()), strnlen(reinterpret_cast<char*>(b.data()), n));
}

TEST(Golden, X86_64) {
  auto r = Open(golden::kX86);
  ASSERT_TRUE(r);
  auto m = r->manifest();
  EXPECT_EQ(r->format_major(), 1);
  EXPECT_EQ(r->format_minor(), 0);
  EXPECT_EQ(m.getArch(), schema::Arch::X8664);
  EXPECT_FALSE(m.hasParent());
  EXPECT_EQ(std::string(m.getCreated().getHostName().cStr()), "golden-host");
  ASSERT_EQ(m.getVcpus().size(), 2u);
  auto v0 = m.getVcpus()[0].getX8664();
  auto v1 = m.getVcpus()[1].getX8664();
  EXPECT_EQ(v0.getRegs().getRip(), 0x100000u);
  EXPECT_EQ(v1.getRegs().getRip(), 0x100010u);
  EXPECT_EQ(v1.getMpState(), 3u);
  EXPECT_EQ(v0.getSregs().getCr3(), 0x3000u);
  EXPECT_EQ(v0.getSregs().getEfer(), 0xd01u);
  EXPECT_EQ(v0.getSregs().getCs().getSelector(), 0x8);
  EXPECT_EQ(v1.getDebugregs().getDr7(), 0x40du);
  bool lstar = false;
  for (auto msr : v0.getMsrs()) lstar |= msr.getIndex() == 0xc0000082 && msr.getValue() == 0xffffffff81c00080ull;
  EXPECT_TRUE(lstar);
  auto xs = v1.getXsave();
  ASSERT_EQ(xs.size(), 4096u);
  EXPECT_EQ(layout::GetLe16(&xs[0]), 0x037f);                      // FCW
  EXPECT_EQ(layout::GetLe32(&xs[24]), 0x1f80u);                    // MXCSR
  EXPECT_EQ(layout::GetLe64(&xs[160 + 16 * 3]), 0x0404040404040404ull);  // XMM3 low
  EXPECT_EQ(layout::GetLe64(&xs[576 + 16 * 15 + 8]), 0xbeef00000000000full);  // YMM15 high
  auto lapic = v1.getLapic();
  ASSERT_EQ(lapic.size(), 1024u);
  EXPECT_EQ(layout::GetLe32(&lapic[0x20]), 1u << 24);              // APIC ID 1
  EXPECT_EQ(layout::GetLe32(&lapic[0xf0]), 0x1ffu);                // SVR
  EXPECT_EQ(v1.getEvents().getException().getNr(), 14);
  EXPECT_EQ(v1.getEvents().getNmi().getPending(), 1);
  EXPECT_EQ(v0.getEvents().getInterrupt().getShadow(), 1);
  auto vm = m.getVm().getX8664();
  EXPECT_EQ(vm.getIoapic().getBaseAddress(), 0xfec00000u);
  EXPECT_EQ(vm.getIoapic().getRedirtbl().size(), 24u);
  EXPECT_EQ(vm.getPicMaster().getIrqBase(), 0x20);
  EXPECT_EQ(vm.getPit().getChannels()[0].getCount(), 0x2e9bu);
  EXPECT_EQ(vm.getClock().getFlags(), 2u);
  EXPECT_EQ(m.getDevices()[0].getName(), "serial0");

  MemoryStats st = ComputeMemoryStats(r->manifest());
  EXPECT_EQ(st.size, 80u * 4096);
  EXPECT_EQ(st.present_pages, 10u);  // 3 boot text + 2 random + page table + 4 kernel text
  EXPECT_EQ(st.zero_pages, 70u);
  EXPECT_EQ(st.chunks, 5u);

  auto chain = SnapshotChain::Open(kDir + "/" + golden::kX86);
  ASSERT_TRUE(chain.ok());
  EXPECT_EQ(PageText(*chain, 0x1000, 40), "vmsnap golden x86_64 boot page 1");
  EXPECT_EQ(PageText(*chain, 0x104000, 40), "kernel text at 0x260000");
  EXPECT_EQ(PageText(*chain, 0x5000, 40), "");
}

TEST(Golden, X86_64IncrementalChild) {
  auto r = Open(golden::kX86Child);
  ASSERT_TRUE(r);
  auto parent = Open(golden::kX86);
  ASSERT_TRUE(parent);
  auto m = r->manifest();
  ASSERT_TRUE(m.hasParent());
  EXPECT_EQ(std::string(m.getParent().getPath().cStr()), golden::kX86);
  EXPECT_EQ(m.getParent().getDepth(), 1u);
  EXPECT_EQ(0, std::memcmp(m.getParent().getSnapshotId().begin(), parent->id().data(), 16));
  EXPECT_EQ(m.getVcpus()[0].getX8664().getRegs().getRip(), 0x100200u);
  MemoryStats st = ComputeMemoryStats(r->manifest());
  EXPECT_EQ(st.defined_pages, 3u);
  EXPECT_EQ(st.present_pages, 2u);
  EXPECT_EQ(st.zero_pages, 1u);
  EXPECT_EQ(st.absent_pages, 77u);

  auto chain = SnapshotChain::Open(kDir + "/" + golden::kX86Child);
  ASSERT_TRUE(chain.ok()) << chain.status().message();
  EXPECT_EQ(chain->layers().size(), 2u);
  EXPECT_EQ(PageText(*chain, 0x2000, 40), "child rewrote page 2");
  EXPECT_EQ(PageText(*chain, 0x1000, 40), "vmsnap golden x86_64 boot page 1");
  EXPECT_EQ(PageText(*chain, 0x105000, 40), "child wrote page 0x105000");
  EXPECT_EQ(chain->Locate(0x28000).layer, 1);  // page 40: zeroed by the child
  EXPECT_FALSE(chain->Locate(0x28000).stored);
  EXPECT_EQ(chain->Locate(0x7000).layer, 0);   // page 7: random, from the parent
  EXPECT_TRUE(chain->Locate(0x7000).stored);
  std::vector<uint8_t> zero(4096, 0), got(4096, 1);
  ASSERT_TRUE(chain->ReadMemory(0x28000, 4096, got.data()).ok());
  EXPECT_EQ(got, zero);
}

TEST(Golden, S390x) {
  auto r = Open(golden::kS390);
  ASSERT_TRUE(r);
  auto m = r->manifest();
  EXPECT_EQ(m.getArch(), schema::Arch::S390X);
  ASSERT_EQ(m.getVcpus().size(), 2u);
  auto c = m.getVcpus()[1].getS390x();
  EXPECT_EQ(c.getMpState(), 4u);
  EXPECT_EQ(c.getPswAddr(), 0x10100u);
  EXPECT_EQ(c.getGprs()[15], 0x539000000000010full);
  auto vm = m.getVm().getS390x();
  EXPECT_TRUE(vm.getCmmaEnabled());
  ASSERT_EQ(vm.getCmma().size(), 2u);
  EXPECT_EQ(vm.getCmma()[1].getStartGfn(), 16u);
  EXPECT_EQ(vm.getCmma()[0].getValues()[6], 4);
  EXPECT_EQ(vm.getSkeys()[0].getKeys().size(), 32u);
  EXPECT_EQ(vm.getSkeys()[0].getKeys()[3], 0x36);
  EXPECT_EQ(ComputeMemoryStats(r->manifest()).present_pages, 11u);
}

TEST(Golden, Ppc64) {
  auto r = Open(golden::kPpc);
  ASSERT_TRUE(r);
  auto m = r->manifest();
  EXPECT_EQ(m.getArch(), schema::Arch::PPC64);
  EXPECT_EQ(r->page_size(), 65536u);
  auto c = m.getVcpus()[0].getPpc64();
  EXPECT_EQ(c.getPvr(), 0x004e1202u);
  EXPECT_EQ(c.getGpr()[31], 0x1f1f1f1f1f1f1f1full);
  EXPECT_EQ(c.getSlb().size(), 2u);
  EXPECT_EQ(c.getOneRegs()[2].getWide().size(), 16u);
  auto h = m.getVm().getPpc64().getHtab();
  EXPECT_EQ(h.getShift(), 18u);
  ASSERT_EQ(h.getEntries().size(), 3u);
  EXPECT_EQ(h.getEntries()[0].getV() & 0x11, 0x11u);  // bolted and valid
  EXPECT_EQ(h.getEntries()[1].getV() & 0x11, 0x01u);  // valid only
  EXPECT_EQ(h.getEntries()[2].getIndex(), 4095u);
  MemoryStats st = ComputeMemoryStats(r->manifest());
  EXPECT_EQ(st.present_pages, 2u);
  EXPECT_EQ(st.zero_pages, 2u);
}

// The first format 1.1 file: an arm64 snapshot.
TEST(Golden, Aarch64) {
  auto r = Open(golden::kArm64);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->format_minor(), 1);
  auto m = r->manifest();
  EXPECT_EQ(m.getArch(), schema::Arch::AARCH64);
  ASSERT_EQ(m.getVcpus().size(), 2u);
  auto c = m.getVcpus()[1].getAarch64();
  EXPECT_EQ(c.getMpState(), 5u);
  EXPECT_EQ(c.getCore().getPc(), 0xffff800008010040ull);
  EXPECT_EQ(c.getCore().getX()[30], 0xa6400000011eull);
  EXPECT_EQ(c.getFp().getV()[31][15], 0xff);
  EXPECT_EQ(c.getSysregs()[4].getValue(), 0x00000034b5193519ull);  // TCR_EL1
  EXPECT_EQ(c.getTimer().getCval(), 0x123500000ull);
  EXPECT_TRUE(m.getVcpus()[0].getAarch64().getEvents().getSerrorPending());
  auto vm = m.getVm().getAarch64();
  EXPECT_EQ(vm.getGic().getNrIrqs(), 64u);
  EXPECT_EQ(vm.getGic().getCpus()[1].getMpidr(), 0x80000001ull);
  EXPECT_TRUE(vm.getIts().getTablesSaved());
  EXPECT_EQ(vm.getIts().getRegs()[2].getOffset(), 0u);  // GITS_CTLR last
  MemoryStats st = ComputeMemoryStats(r->manifest());
  EXPECT_EQ(st.present_pages, 2u);
  EXPECT_EQ(st.zero_pages, 14u);
}

TEST(Golden, NewerMinorIsRead) {
  auto r = Open(golden::kNewerMinor);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->format_major(), 1);
  EXPECT_EQ(r->format_minor(), 9);
  EXPECT_EQ(r->manifest().getArch(), schema::Arch::S390X);
}

// The exact errors, as listed in README.md.
struct BadFile {
  const char* name;
  Code code;
  const char* message;
  bool on_open;  // false: Open succeeds and VerifyAll fails
};

TEST(Golden, KnownBadFilesFailWithTheDocumentedMessage) {
  const BadFile bad[] = {
      {golden::kBadMagic, Code::kCorruption, "header at file offset 0x0: bad magic (not a .vmsnap file)", true},
      {golden::kNewerMajor, Code::kUnsupported, "unsupported format version 2.0 (this vmsnap reads 1.x)", true},
      {golden::kTruncated, Code::kCorruption, VMSNAP_GOLDEN_TRUNCATED, true},
      {golden::kBadManifestChecksum, Code::kCorruption, VMSNAP_GOLDEN_BAD_MANIFEST, true},
      {golden::kBadChunkChecksum, Code::kCorruption, VMSNAP_GOLDEN_BAD_CHUNK, false},
  };
  for (const auto& b : bad) {
    auto r = SnapshotReader::Open(kDir + "/" + b.name);
    Status st = r.ok() ? (*r)->VerifyAll() : r.status();
    EXPECT_EQ(r.ok(), !b.on_open) << b.name;
    EXPECT_EQ(st.code(), b.code) << b.name;
    EXPECT_EQ(st.message(), b.message) << b.name;
  }
}

TEST(Golden, MissingParent) {
  // The file itself is fine; only following its parent fails.
  auto r = Open(golden::kMissingParent);
  ASSERT_TRUE(r);
  auto chain = SnapshotChain::Open(kDir + "/" + golden::kMissingParent);
  ASSERT_FALSE(chain.ok());
  EXPECT_EQ(chain.status().code(), Code::kNotFound);
  EXPECT_EQ(chain.status().message(), "parent snapshot " + kDir + "/does-not-exist.vmsnap of " + kDir +
                                          "/missing-parent.vmsnap is missing");
}

TEST(Golden, FilesAreSmall) {
  for (const char* f : golden::kAllFiles) {
    EXPECT_LE(testing::ReadFileBytes(kDir + "/" + f).size(), 48u * 1024) << f;
  }
}

TEST(Golden, GeneratorReproducesTheCommittedBytes) {
  testing::TempDir d;
  Status s = golden::GenerateAll(d.path());
  ASSERT_TRUE(s.ok()) << s.message();
  for (const char* f : golden::kAllFiles) {
    EXPECT_TRUE(testing::ReadFileBytes(d / f) == testing::ReadFileBytes(kDir + "/" + f))
        << f << " differs from a fresh generation: a format change must keep old files "
                "readable and add new golden files, not rewrite these";
  }
}

}  // namespace
}  // namespace vmsnap
