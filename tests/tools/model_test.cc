// SPDX-License-Identifier: MIT
// The JSON model and decoders on manifests built in memory: every stable key
// of `inspect --json` (tools/state_json.h), decoded XSAVE/LAPIC/CMMA/storage
// keys/HPTEs, and the JSON diff.
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "tools/decode_x86.h"
#include "tools/json_diff.h"
#include "tools/memory_map.h"
#include "tools/state_json.h"

namespace vmsnap::tools {
namespace {

void PutLe(std::vector<uint8_t>& b, size_t off, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++) b[off + i] = uint8_t(v >> (8 * i));
}

std::vector<uint8_t> MakeXsave() {
  std::vector<uint8_t> a(4096, 0);
  PutLe(a, 0, 0x037f, 2);           // FCW
  PutLe(a, 2, 0x3800, 2);           // FSW
  PutLe(a, 4, 0x80, 1);             // FTW abridged
  PutLe(a, 6, 0x055d, 2);           // FOP
  PutLe(a, 8, 0xffffffff81001234, 8);   // FIP
  PutLe(a, 16, 0x7ffc0000beef, 8);      // FDP
  PutLe(a, 24, 0x1fa0, 4);          // MXCSR
  PutLe(a, 28, 0xffff, 4);
  // ST0 = 1.0 as an 80-bit extended: exponent 0x3fff, mantissa 0x8000000000000000.
  PutLe(a, 32, 0x8000000000000000, 8);
  PutLe(a, 40, 0x3fff, 2);
  // XMM3 = 0x00112233445566778899aabbccddeeff.
  PutLe(a, 160 + 16 * 3, 0x8899aabbccddeeff, 8);
  PutLe(a, 160 + 16 * 3 + 8, 0x0011223344556677, 8);
  PutLe(a, 512, 0x7, 8);            // XSTATE_BV: x87, SSE, AVX
  // YMM3 upper half.
  PutLe(a, 576 + 16 * 3, 0xdeadbeefcafef00d, 8);
  PutLe(a, 576 + 16 * 3 + 8, 0x0123456789abcdef, 8);
  return a;
}

std::vector<uint8_t> MakeLapic() {
  std::vector<uint8_t> p(1024, 0);
  PutLe(p, 0x20, 0x01000000, 4);
  PutLe(p, 0x30, 0x50014, 4);
  PutLe(p, 0x80, 0x20, 4);
  PutLe(p, 0xf0, 0x1ff, 4);
  PutLe(p, 0x100 + 16 * 1, 1u << 0, 4);   // ISR vector 32
  PutLe(p, 0x200 + 16 * 7, 1u << 31, 4);  // IRR vector 255
  PutLe(p, 0x300, 0x4000, 4);
  PutLe(p, 0x310, 0x02000000, 4);
  PutLe(p, 0x320, 0x20000 | 0xec, 4);     // periodic, vector 0xec
  PutLe(p, 0x380, 0x10000, 4);
  PutLe(p, 0x390, 0x8000, 4);
  PutLe(p, 0x3e0, 0xb, 4);                // divide by 1
  return p;
}

void FillX86(schema::Manifest::Builder m, uint64_t rip1) {
  m.setArch(schema::Arch::X8664);
  m.getMemory().setPageSize(4096);
  auto regions = m.getMemory().initRegions(1);
  regions[0].setGuestPhysAddr(0);
  regions[0].setSize(1 << 20);
  regions[0].setName("ram");
  auto vcpus = m.initVcpus(2);
  auto xsave = MakeXsave();
  auto lapic = MakeLapic();
  for (uint32_t i = 0; i < 2; i++) {
    vcpus[i].setId(i);
    auto x = vcpus[i].initX8664();
    x.setMpState(i == 0 ? 0 : 3);
    x.getRegs().setRip(i == 0 ? 0x100000 : rip1);
    x.getRegs().setRflags(0x2);
    x.getRegs().setR15(0xf00d);
    x.getSregs().setApicBase(0xfee00900);
    x.getSregs().setCr3(0x1000);
    x.getDebugregs().setDr7(0x400);
    x.setXsave(capnp::Data::Reader(xsave.data(), xsave.size()));
    x.setLapic(capnp::Data::Reader(lapic.data(), lapic.size()));
    auto msrs = x.initMsrs(3);
    msrs[0].setIndex(0x10);
    msrs[0].setValue(1000 + i);
    msrs[1].setIndex(0xc0000080);
    msrs[1].setValue(0x500);
    msrs[2].setIndex(0xc0000082);
    msrs[2].setValue(0xffffffff81000000);
    x.setTscKhz(2000000);
  }
  auto vm = m.getVm().initX8664();
  vm.getClock().setClock(123456789);
  vm.getConfig().setDirtyRingBytes(65536);
  auto pit = vm.getPit().initChannels(3);
  pit[0].setCountLoadTime(-5);
  auto chunks = m.initChunks(1);
  chunks[0].setGuestPhysAddr(0);
  chunks[0].setPageCount(16);
  uint8_t present[2] = {0x0f, 0x80};  // pages 0-3 and 15 stored
  chunks[0].setPresentBitmap(capnp::Data::Reader(present, 2));
  chunks[0].setStoredLength(12345);
  chunks[0].setRawLength(5 * 4096);
}

SnapshotFacts Facts() {
  SnapshotFacts f;
  f.id = "00112233445566778899aabbccddeeff";
  f.format_major = 1;
  f.format_minor = 0;
  return f;
}

TEST(StateJson, X86ContractKeys) {
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  FillX86(m, 0x200000);
  auto r = ManifestToJson(m.asReader(), Facts());
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Json& j = *r;
  EXPECT_EQ(j["format_version"], "1.0");
  EXPECT_EQ(j["arch"], "x86_64");
  EXPECT_TRUE(j["parent"].is_null());
  ASSERT_EQ(j["vcpus"].size(), 2u);
  const Json& v0 = j["vcpus"][0];
  EXPECT_EQ(v0["id"], 0);
  EXPECT_EQ(v0["mp_state"], "RUNNABLE");
  EXPECT_EQ(j["vcpus"][1]["mp_state"], "HALTED");
  EXPECT_EQ(v0["regs"]["rip"], "0x100000");
  EXPECT_EQ(v0["regs"]["rflags"], "0x2");
  EXPECT_EQ(v0["regs"]["r15"], "0xf00d");
  EXPECT_EQ(v0["regs"]["rax"], "0x0");
  EXPECT_EQ(v0["sregs"]["apic_base"], "0xfee00900");
  EXPECT_EQ(v0["sregs"]["cr3"], "0x1000");
  EXPECT_TRUE(v0["sregs"].contains("efer"));
  EXPECT_EQ(v0["debugregs"]["dr7"], "0x400");
  EXPECT_EQ(v0["msrs"]["0xc0000082"], "0xffffffff81000000");
  EXPECT_EQ(v0["msrs"]["0x10"], "0x3e8");
  EXPECT_EQ(v0["tsc_khz"], 2000000);  // $Common.decimal
  EXPECT_TRUE(v0.contains("events"));
  EXPECT_FALSE(v0.contains("x8664"));  // union flattened
  EXPECT_EQ(j["vm"]["clock"]["clock"], "0x75bcd15");
  EXPECT_EQ(j["vm"]["config"]["dirty_ring_bytes"], 65536);
  EXPECT_EQ(j["vm"]["pit"]["channels"][0]["count_load_time"], "-0x5");
  const Json& mem = j["memory"];
  EXPECT_EQ(mem["size"], 1 << 20);
  EXPECT_EQ(mem["page_size"], 4096);
  EXPECT_EQ(mem["present_pages"], 5);
  EXPECT_EQ(mem["zero_pages"], 256 - 5);
  EXPECT_EQ(mem["stored_bytes"], 12345);
  EXPECT_EQ(mem["chunks"], 1);
  EXPECT_EQ(mem["regions"][0]["guest_phys_addr"], "0x0");
  EXPECT_EQ(mem["regions"][0]["size"], 1 << 20);
}

TEST(StateJson, DecodesXsaveAndLapic) {
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  FillX86(m, 0x200000);
  auto r = ManifestToJson(m.asReader(), Facts());
  ASSERT_TRUE(r.ok());
  const Json& x = (*r)["vcpus"][0]["xsave_decoded"];
  EXPECT_EQ(x["fcw"], "0x37f");
  EXPECT_EQ(x["fsw"], "0x3800");
  EXPECT_EQ(x["ftw"], "0x80");
  EXPECT_EQ(x["fop"], "0x55d");
  EXPECT_EQ(x["fip"], "0xffffffff81001234");
  EXPECT_EQ(x["fdp"], "0x7ffc0000beef");
  EXPECT_EQ(x["mxcsr"], "0x1fa0");
  EXPECT_EQ(x["st0"], "0x3fff8000000000000000");
  EXPECT_EQ(x["xmm3"], "0x00112233445566778899aabbccddeeff");
  EXPECT_EQ(x["xmm0"], "0x00000000000000000000000000000000");
  EXPECT_EQ(x["xstate_bv"], "0x7");
  EXPECT_EQ(x["ymm3"], "0x0123456789abcdefdeadbeefcafef00d00112233445566778899aabbccddeeff");
  const Json& l = (*r)["vcpus"][0]["lapic_decoded"];
  EXPECT_EQ(l["id"], "0x1000000");
  EXPECT_EQ(l["version"], "0x50014");
  EXPECT_EQ(l["tpr"], "0x20");
  EXPECT_EQ(l["spurious"], "0x1ff");
  EXPECT_EQ(l["isr"], Json::array({32}));
  EXPECT_EQ(l["irr"], Json::array({255}));
  EXPECT_EQ(l["tmr"], Json::array());
  EXPECT_EQ(l["icr"], "0x200000000004000");
  EXPECT_EQ(l["lvt_timer"], "0x200ec");
  EXPECT_EQ(l["timer_mode"], "periodic");
  EXPECT_EQ(l["timer_initial_count"], "0x10000");
  EXPECT_EQ(l["timer_current_count"], "0x8000");
  EXPECT_EQ(l["timer_divisor"], 1);
  EXPECT_EQ(l["software_enabled"], true);
}

TEST(StateJson, XsaveWithoutAvxHasZeroUpperHalves) {
  auto a = MakeXsave();
  PutLe(a, 512, 0x3, 8);
  Json x = DecodeXsave(a);
  EXPECT_EQ(x["ymm3"], "0x0000000000000000000000000000000000112233445566778899aabbccddeeff");
  EXPECT_EQ(x["avx_in_use"], false);
}

TEST(StateJson, ShortBlobsAreReportedNotFatal) {
  std::vector<uint8_t> tiny(10, 0xff);
  EXPECT_TRUE(DecodeXsave(tiny).contains("error"));
  EXPECT_TRUE(DecodeLapic(tiny).contains("error"));
  std::vector<uint8_t> no_avx(600, 0);
  PutLe(no_avx, 512, 0x4, 8);  // claims AVX, area ends first
  EXPECT_TRUE(DecodeXsave(no_avx).contains("error"));
}

TEST(StateJson, S390DecodesCmmaAndKeys) {
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  m.setArch(schema::Arch::S390X);
  auto v = m.initVcpus(1)[0];
  auto s = v.initS390x();
  s.setMpState(7);
  s.setPswAddr(0x10000);
  auto vm = m.getVm().initS390x();
  vm.setCmmaEnabled(true);
  auto cmma = vm.initCmma(2);
  uint8_t v1[] = {0, 0, 1, 3, 3, 0x42};
  cmma[0].setStartGfn(0x100);
  cmma[0].setValues(capnp::Data::Reader(v1, sizeof v1));
  uint8_t v2[] = {1};
  cmma[1].setStartGfn(0x200);
  cmma[1].setValues(capnp::Data::Reader(v2, sizeof v2));
  auto sk = vm.initSkeys(1);
  uint8_t keys[] = {0x00, 0x00, 0x36, 0x36, 0xf8};  // 0x36: acc 3, R, C
  sk[0].setStartGfn(0);
  sk[0].setKeys(capnp::Data::Reader(keys, sizeof keys));
  auto r = ManifestToJson(m.asReader(), Facts());
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Json& j = *r;
  EXPECT_EQ(j["arch"], "s390x");
  EXPECT_EQ(j["vcpus"][0]["mp_state"], "OPERATING");
  EXPECT_EQ(j["vcpus"][0]["psw_addr"], "0x10000");
  const Json& c = j["vm"]["cmma_decoded"];
  EXPECT_EQ(c["pages"], 7);
  EXPECT_EQ(c["counts"]["stable"], 2);
  EXPECT_EQ(c["counts"]["unused"], 2);
  EXPECT_EQ(c["counts"]["potentially_volatile"], 1);
  EXPECT_EQ(c["counts"]["volatile"], 2);
  EXPECT_EQ(c["counts"]["nodat"], 1);
  ASSERT_EQ(c["runs"].size(), 5u);
  EXPECT_EQ(c["runs"][0]["start_gfn"], "0x100");
  EXPECT_EQ(c["runs"][0]["pages"], 2);
  EXPECT_EQ(c["runs"][2]["state"], "volatile");
  EXPECT_EQ(c["runs"][2]["pages"], 2);
  EXPECT_EQ(c["runs"][3]["nodat"], true);
  EXPECT_EQ(c["runs"][4]["start_gfn"], "0x200");
  const Json& k = j["vm"]["skeys_decoded"];
  EXPECT_EQ(k["pages"], 5);
  EXPECT_EQ(k["by_access_key"]["0"], 2);
  EXPECT_EQ(k["by_access_key"]["3"], 2);
  EXPECT_EQ(k["by_access_key"]["15"], 1);
  EXPECT_EQ(k["fetch_protected"], 1);
  EXPECT_EQ(k["referenced"], 2);
  EXPECT_EQ(k["changed"], 2);
  ASSERT_EQ(k["runs"].size(), 3u);
  EXPECT_EQ(k["runs"][1]["access_key"], 3);
  EXPECT_EQ(k["runs"][1]["referenced"], true);
  EXPECT_EQ(k["runs"][1]["fetch_protection"], false);
  EXPECT_EQ(k["runs"][2]["fetch_protection"], true);
  EXPECT_TRUE(j["vm"].contains("tod_low"));
}

TEST(StateJson, PpcDecodesHptes) {
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  m.setArch(schema::Arch::PPC64);
  m.initVcpus(1)[0].initPpc64().setPc(0xc000000000001000);
  auto htab = m.getVm().initPpc64().getHtab();
  htab.setShift(18);
  auto e = htab.initEntries(3);
  // 4 KiB page, valid, bolted, AVPN 0x123, RPN 0x4567, PP 2, WIMG M, C.
  e[0].setIndex(8);
  e[0].setV((0x123ull << 7) | 0x10 | 0x1);
  e[0].setR((0x4567ull << 12) | 0x80 | 0x10 | 0x2);
  // 64 KiB page (L, LP 0x1), real address 0x10000000, N.
  e[1].setIndex(9);
  e[1].setV(0x4 | 0x1 | (1ull << 62));
  e[1].setR(0x10000000ull | (0x1 << 12) | 0x4 | 0x8000000000000000ull);
  // 16 MiB page in a 64 KiB segment (LP 0x08).
  e[2].setIndex(10);
  e[2].setV(0x4 | 0x1);
  e[2].setR(0x2000000ull | (0x8 << 12));
  auto r = ManifestToJson(m.asReader(), Facts());
  ASSERT_TRUE(r.ok()) << r.status().message();
  const Json& h = (*r)["vm"]["htab"];
  EXPECT_EQ(h["shift"], 18);
  const Json& a = h["entries"][0];
  EXPECT_EQ(a["index"], 8);
  EXPECT_EQ(a["valid"], true);
  EXPECT_EQ(a["bolted"], true);
  EXPECT_EQ(a["avpn"], "0x123");
  EXPECT_EQ(a["base_page_size"], 4096);
  EXPECT_EQ(a["actual_page_size"], 4096);
  EXPECT_EQ(a["rpn"], "0x4567");
  EXPECT_EQ(a["pp"], "0x2");
  EXPECT_EQ(a["wimg"], "0x2");
  EXPECT_EQ(a["changed"], true);
  EXPECT_EQ(a["n"], false);
  const Json& b = h["entries"][1];
  EXPECT_EQ(b["bolted"], false);
  EXPECT_EQ(b["segment_size"], "1T");
  EXPECT_EQ(b["base_page_size"], 65536);
  EXPECT_EQ(b["actual_page_size"], 65536);
  EXPECT_EQ(b["real_address"], "0x10000000");
  EXPECT_EQ(b["pp"], "0x4");
  EXPECT_EQ(b["n"], true);
  const Json& c = h["entries"][2];
  EXPECT_EQ(c["base_page_size"], 65536);
  EXPECT_EQ(c["actual_page_size"], 16 << 20);
  EXPECT_EQ(c["real_address"], "0x2000000");
}

TEST(JsonDiff, NamesTheFieldAndIgnoresVolatileState) {
  capnp::MallocMessageBuilder ma, mb;
  auto a = ma.initRoot<schema::Manifest>();
  auto b = mb.initRoot<schema::Manifest>();
  FillX86(a, 0x200000);
  FillX86(b, 0x200010);
  VolatileSet va, vb;
  auto ja = ManifestToJson(a.asReader(), Facts(), &va);
  auto jb = ManifestToJson(b.asReader(), Facts(), &vb);
  ASSERT_TRUE(ja.ok() && jb.ok());
  auto d = DiffJson(*ja, *jb, {});
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].path, "vcpus[1].regs.rip");
  EXPECT_EQ(d[0].a, "0x200000");
  EXPECT_EQ(d[0].b, "0x200010");

  // Time-based state: TSC, kvmclock, LAPIC current count.
  b.getVcpus()[0].getX8664().getMsrs()[0].setValue(99999);
  b.getVm().getX8664().getClock().setClock(1);
  auto lapic = MakeLapic();
  PutLe(lapic, 0x390, 0x1234, 4);
  b.getVcpus()[1].getX8664().setLapic(capnp::Data::Reader(lapic.data(), lapic.size()));
  jb = ManifestToJson(b.asReader(), Facts(), &vb);
  d = DiffJson(*ja, *jb, {});
  std::vector<std::string> paths;
  for (auto& x : d) paths.push_back(x.path);
  EXPECT_EQ(paths, (std::vector<std::string>{"vcpus[0].msrs.0x10", "vcpus[1].regs.rip",
                                             "vcpus[1].lapic_decoded.timer_current_count",
                                             "vm.clock.clock"}));
  JsonDiffOptions o;
  o.ignore_volatile = true;
  o.volatile_a = &va;
  o.volatile_b = &vb;
  d = DiffJson(*ja, *jb, o);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].path, "vcpus[1].regs.rip");

  // A byte of the LAPIC page that the decoder does not show is reported raw.
  PutLe(lapic, 0x3f0, 0x1, 4);
  b.getVcpus()[1].getX8664().setLapic(capnp::Data::Reader(lapic.data(), lapic.size()));
  jb = ManifestToJson(b.asReader(), Facts(), &vb);
  d = DiffJson(*ja, *jb, o);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[1].path, "vcpus[1].lapic");
}

TEST(MemoryMap, RangesPerRegion) {
  capnp::MallocMessageBuilder msg;
  auto m = msg.initRoot<schema::Manifest>();
  FillX86(m, 0);
  Json map = MemoryMapJson(m.asReader());
  ASSERT_EQ(map.size(), 1u);
  const Json& r = map[0]["ranges"];
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0]["state"], "present");
  EXPECT_EQ(r[0]["start"], "0x0");
  EXPECT_EQ(r[0]["end"], "0x4000");
  EXPECT_EQ(r[1]["state"], "zero");
  EXPECT_EQ(r[1]["pages"], 11);
  EXPECT_EQ(r[2]["state"], "present");
  EXPECT_EQ(r[2]["start"], "0xf000");
  EXPECT_EQ(r[3]["state"], "absent");
  EXPECT_EQ(r[3]["end"], "0x100000");
  EXPECT_EQ(r[3]["bytes"], (1 << 20) - 0x10000);
}

}  // namespace
}  // namespace vmsnap::tools
