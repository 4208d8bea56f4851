// SPDX-License-Identifier: MIT
// The golden files' content: realistic, recognisable state for each
// architecture, and known-bad variants made by file surgery.
#include "tests/golden/golden_gen.h"

#include <cstdio>
#include <cstring>
#include <vector>

#include "format/reader.h"
#include "format/writer.h"
#include "tests/format/test_util.h"

namespace vmsnap::golden {
namespace {

using testing::Bytes;

constexpr int64_t kTime = 1700000000123456789;  // 2023-11-14T22:13:20Z, fixed

void SetCreation(schema::Manifest::Builder m, const char* cpu) {
  auto c = m.initCreated();
  c.setToolVersion("vmsnap 0.1.0 (golden)");
  c.setHostKernel("6.1.0-golden");
  c.setHostCpu(cpu);
  c.setHostName("golden-host");
  c.setTimeUnixNs(kTime);
}

void SetSave(schema::Manifest::Builder m, const char* compression) {
  auto s = m.initSave();
  s.setLive(false);
  s.setRounds(1);
  s.setPauseNs(1234567);
  s.setDurationNs(2345678);
  s.setCompression(compression);
}

// A page whose text says what it is, so a hex dump of the file or of guest
// memory shows where it came from.
void TextPage(uint8_t* p, size_t size, const std::string& text) {
  std::memset(p, 0, size);
  for (size_t off = 0; off + text.size() < size; off += 64) std::memcpy(p + off, text.data(), text.size());
}

Status Write(const std::string& path, const WriterOptions& o,
             const std::function<Status(SnapshotWriter&)>& fill, layout::SnapshotId* id = nullptr) {
  VMSNAP_ASSIGN_OR_RETURN(auto w, SnapshotWriter::Create(path, o));
  VMSNAP_RETURN_IF_ERROR(fill(*w));
  VMSNAP_RETURN_IF_ERROR(w->Commit());
  if (id) *id = w->id();
  return Status::Ok();
}

WriterOptions Opts(uint32_t page_size, uint32_t chunk_pages) {
  WriterOptions o;
  o.page_size = page_size;
  o.chunk_pages = chunk_pages;
  o.threads = 1;
  o.zstd_level = 3;
  return o;
}

// ---------------------------------------------------------------- x86_64

void Segment(schema::x86::Segment::Builder s, uint64_t base, uint32_t limit, uint16_t sel,
             uint8_t type, uint8_t s_, uint8_t l, uint8_t db, uint8_t g) {
  s.setBase(base);
  s.setLimit(limit);
  s.setSelector(sel);
  s.setType(type);
  s.setPresent(1);
  s.setDpl(0);
  s.setDb(db);
  s.setS(s_);
  s.setL(l);
  s.setG(g);
  s.setAvl(0);
  s.setUnusable(0);
}

// KVM_GET_XSAVE layout: legacy FXSAVE region, XSAVE header at 512, AVX upper
// halves (YMM_Hi128) at 576.
Bytes XsaveArea(int vcpu) {
  Bytes x(4096, 0);
  layout::PutLe16(&x[0], 0x037f);            // FCW
  layout::PutLe16(&x[2], 0x3800 | vcpu);     // FSW: TOP=7 (one value pushed)
  x[4] = 0x80;                               // abridged FTW: ST0 valid
  layout::PutLe32(&x[24], 0x1f80);           // MXCSR
  layout::PutLe32(&x[28], 0xffff);           // MXCSR_MASK
  // ST0 = 1.0 (80-bit: mantissa 0x8000000000000000, exponent 0x3fff); ST1 = -2.5.
  layout::PutLe64(&x[32], 0x8000000000000000ull);
  layout::PutLe16(&x[40], 0x3fff);
  layout::PutLe64(&x[48], 0xa000000000000000ull);
  layout::PutLe16(&x[56], 0xc000);
  for (int i = 0; i < 16; ++i) {
    // XMMi low qword 0x1111111111111111 * (i+1)-ish, high qword tagged with vCPU.
    layout::PutLe64(&x[160 + 16 * i], 0x0101010101010101ull * uint64_t(i + 1));
    layout::PutLe64(&x[168 + 16 * i], 0xc0de000000000000ull | uint64_t(vcpu) << 32 | uint64_t(i));
    // YMMi upper half.
    layout::PutLe64(&x[576 + 16 * i], 0xa0a0a0a0a0a0a0a0ull + uint64_t(i));
    layout::PutLe64(&x[584 + 16 * i], 0xbeef000000000000ull | uint64_t(i));
  }
  layout::PutLe64(&x[512], 0x7);  // XSTATE_BV: x87 | SSE | AVX
  return x;
}

// struct kvm_lapic_state.regs: 32-bit registers every 16 bytes.
Bytes LapicPage(int vcpu) {
  Bytes a(1024, 0);
  auto reg = [&](size_t off, uint32_t v) { layout::PutLe32(&a[off], v); };
  reg(0x20, uint32_t(vcpu) << 24);  // APIC ID
  reg(0x30, 0x00050014);            // version 0x14, 6 LVT entries
  reg(0x80, 0x10);                  // TPR
  reg(0xd0, 1u << (24 + vcpu));     // LDR
  reg(0xe0, 0xffffffff);            // DFR flat
  reg(0xf0, 0x1ff);                 // SVR: enabled, spurious vector 0xff
  reg(0x100 + 0x10 * 1, 0x00000002);  // ISR bits 32..63: vector 0x21 in service
  reg(0x200 + 0x10 * 1, 0x00000008);  // IRR: vector 0x23 pending
  reg(0x300, 0x000c4500);           // ICR low
  reg(0x310, 0x01000000);           // ICR high
  reg(0x320, 0x000200ec);           // LVT timer: periodic, vector 0xec
  reg(0x350, 0x00000700);           // LINT0: ExtINT
  reg(0x360, 0x00000400);           // LINT1: NMI
  reg(0x370, 0x000000fe);           // LVT error
  reg(0x380, 0x00100000);           // timer initial count
  reg(0x390, 0x0004f000);           // timer current count
  reg(0x3e0, 0x0000000b);           // divide by 1
  return a;
}

void FillX86Vcpu(schema::x86::Vcpu::Builder v, int i, uint64_t rip) {
  v.setMpState(i == 0 ? 0 : 3);  // RUNNABLE, HALTED
  auto r = v.initRegs();
  r.setRax(0x1234 + uint64_t(i));
  r.setRbx(0xdeadbeef);
  r.setRcx(0x10);
  r.setRdx(0x4000000);
  r.setRsi(2);
  r.setRdi(uint64_t(i));
  r.setRsp(0x7fe00 - 0x4000 * uint64_t(i));
  r.setRbp(0x7ff00 - 0x4000 * uint64_t(i));
  r.setR8(0x8888888888888888ull);
  r.setR9(9);
  r.setR10(0xa);
  r.setR11(0x246);
  r.setR12(0xc);
  r.setR13(0xd);
  r.setR14(0xe);
  r.setR15(0xffffffff81000000ull);
  r.setRip(rip + 0x10 * uint64_t(i));
  r.setRflags(i == 0 ? 0x246 : 0x2);
  auto s = v.initSregs();
  Segment(s.initCs(), 0, 0xffffffff, 0x08, 0xb, 1, 1, 0, 1);
  for (auto seg : {s.initDs(), s.initEs(), s.initFs(), s.initGs(), s.initSs()}) {
    Segment(seg, 0, 0xffffffff, 0x10, 0x3, 1, 0, 1, 1);
  }
  s.getFs().setBase(0x7f0000001000ull + uint64_t(i) * 0x1000);
  Segment(s.initTr(), 0x5000, 0x67, 0x18, 0xb, 0, 0, 0, 0);
  Segment(s.initLdt(), 0, 0xffff, 0, 0x2, 0, 0, 0, 0);
  s.getLdt().setUnusable(1);
  s.initGdt().setBase(0x1000);
  s.getGdt().setLimit(0x1f);
  s.initIdt().setBase(0x2000);
  s.getIdt().setLimit(0xfff);
  s.setCr0(0x80050033);
  s.setCr2(0xdead0000);
  s.setCr3(0x3000);
  s.setCr4(0x3406a0);
  s.setCr8(1);
  s.setEfer(0xd01);
  s.setApicBase(0xfee00000 | (i == 0 ? 0x900 : 0x800));
  auto ib = s.initInterruptBitmap(4);
  for (unsigned k = 0; k < 4; ++k) ib.set(k, 0);
  auto xs = XsaveArea(i);
  v.setXsave(kj::arrayPtr(xs.data(), xs.size()));
  auto xcr = v.initXcrs(1);
  xcr[0].setXcr(0);
  xcr[0].setValue(0x7);
  auto d = v.initDebugregs();
  d.setDr0(0x100000);
  d.setDr1(0x100040);
  d.setDr2(0);
  d.setDr3(0);
  d.setDr6(0xffff0ff0);
  d.setDr7(0x405 + (i == 1 ? 0x8 : 0));
  auto lap = LapicPage(i);
  v.setLapic(kj::arrayPtr(lap.data(), lap.size()));
  const std::pair<uint32_t, uint64_t> msrs[] = {
      {0x10, 0x12345678ab + uint64_t(i)},    // IA32_TSC
      {0x174, 0x8},                          // SYSENTER_CS
      {0x175, 0xfffffe0000003000ull},        // SYSENTER_ESP
      {0x176, 0xffffffff81a01000ull},        // SYSENTER_EIP
      {0x1a0, 0x1},                          // MISC_ENABLE
      {0x277, 0x0007040600070406ull},        // PAT
      {0x4b564d00, 0x2000 + 0x40 * uint64_t(i) + 1},  // kvm-clock wall
      {0x4b564d01, 0x3000 + 0x40 * uint64_t(i) + 1},  // kvm-clock system time
      {0xc0000080, 0xd01},                   // EFER
      {0xc0000081, 0x0023001000000000ull},   // STAR
      {0xc0000082, 0xffffffff81c00080ull},   // LSTAR
      {0xc0000083, 0xffffffff81c01580ull},   // CSTAR
      {0xc0000084, 0x47700},                 // SFMASK
      {0xc0000100, 0x7f0000001000ull + uint64_t(i) * 0x1000},  // FS_BASE
      {0xc0000101, 0},                       // GS_BASE
      {0xc0000102, 0xffff888007a00000ull + uint64_t(i) * 0x40000},  // KERNEL_GS_BASE
      {0xc0000103, uint64_t(i)},             // TSC_AUX
  };
  auto ml = v.initMsrs(std::size(msrs));
  for (unsigned k = 0; k < std::size(msrs); ++k) {
    ml[k].setIndex(msrs[k].first);
    ml[k].setValue(msrs[k].second);
  }
  auto e = v.initEvents();
  e.setFlags(0x1 | 0x4 | 0x8 | 0x10);  // NMI_PENDING | SHADOW | SMM | PAYLOAD
  if (i == 1) {
    e.initException().setInjected(1);
    e.getException().setNr(14);
    e.getException().setHasErrorCode(1);
    e.getException().setErrorCode(0x2);
    e.setExceptionHasPayload(1);
    e.setExceptionPayload(0xdead0000);
    e.initNmi().setPending(1);
    e.getNmi().setMasked(1);
  } else {
    e.initInterrupt().setInjected(1);
    e.getInterrupt().setNr(0x20);
    e.getInterrupt().setShadow(1);
  }
  e.setSipiVector(0x9f);
  e.initSmi().setLatchedInit(uint8_t(i));
  auto cpuid = v.initCpuid(3);
  cpuid[0].setFunction(0);
  cpuid[0].setEax(0xd);
  cpuid[0].setEbx(0x756e6547);  // "GenuineIntel"
  cpuid[0].setEdx(0x49656e69);
  cpuid[0].setEcx(0x6c65746e);
  cpuid[1].setFunction(1);
  cpuid[1].setEax(0x806ec);
  cpuid[1].setEbx(uint32_t(i) << 24 | 0x800);
  cpuid[1].setEcx(0xf6fa3203);
  cpuid[1].setEdx(0x178bfbff);
  cpuid[2].setFunction(0xd);
  cpuid[2].setIndex(1);
  cpuid[2].setFlags(1);
  cpuid[2].setEax(0xf);
  v.setTscKhz(2995200);
  v.setKvmclockCtrl(true);
}

void FillX86Vm(schema::x86::Vm::Builder vm) {
  auto c = vm.initConfig();
  c.setTssAddr(0xfffbd000);
  c.setIdentityMapAddr(0xfffbc000);
  c.setIrqchip(true);
  c.setPit(true);
  c.setPitFlags(0);
  auto caps = c.initEnabledCaps(1);
  caps[0].setCap(192);
  caps[0].setName("KVM_CAP_DIRTY_LOG_RING");
  caps[0].initArgs(1).set(0, 65536);
  c.setDirtyRingBytes(65536);
  for (int k = 0; k < 2; ++k) {
    auto p = k == 0 ? vm.initPicMaster() : vm.initPicSlave();
    p.setIrr(k ? 0 : 0x01);
    p.setImr(k ? 0xff : 0xb8);
    p.setIsr(0);
    p.setIrqBase(k ? 0x28 : 0x20);
    p.setInit4(1);
    p.setElcr(k ? 0x0e : 0x20);
    p.setElcrMask(k ? 0xde : 0xf8);
    p.setAutoEoi(0);
    p.setSpecialFullyNested(0);
    p.setReadReg(0);
  }
  auto io = vm.initIoapic();
  io.setBaseAddress(0xfec00000);
  io.setIoregsel(0x10);
  io.setId(0);
  io.setIrr(0);
  auto rt = io.initRedirtbl(24);
  for (unsigned k = 0; k < 24; ++k) rt.set(k, k == 4 ? 0x0000000000000024ull : 0x10000);  // masked except COM1
  auto pit = vm.initPit();
  pit.setFlags(0);
  auto ch = pit.initChannels(3);
  for (unsigned k = 0; k < 3; ++k) {
    ch[k].setCount(k == 0 ? 0x2e9b : 0x10000);
    ch[k].setLatchedCount(0);
    ch[k].setRwMode(3);
    ch[k].setMode(k == 0 ? 2 : 3);
    ch[k].setGate(k == 2 ? 0 : 1);
    ch[k].setCountLoadTime(kTime + int64_t(k));
  }
  auto clk = vm.initClock();
  clk.setClock(123456789000);
  clk.setFlags(0x2);
  clk.setRealtime(uint64_t(kTime));
  clk.setHostTsc(0x1234567890ull);
}

// Memory of the x86 golden guest: region 0 = 64 pages at 0 (boot code text,
// zeros, two random pages), region 1 = 16 pages at 0x100000.
std::vector<Bytes> X86Memory() {
  std::vector<Bytes> m = {Bytes(64 * 4096, 0), Bytes(16 * 4096, 0)};
  testing::Rng rng(0x86);
  for (int p = 0; p < 64; ++p) {
    uint8_t* pg = m[0].data() + p * 4096;
    if (p == 1 || p == 2 || p == 3) TextPage(pg, 4096, "vmsnap golden x86_64 boot page " + std::to_string(p));
    if (p == 7 || p == 40) rng.Fill(pg, 4096);
    if (p == 20) TextPage(pg, 4096, "page table page 20");
  }
  for (int p = 0; p < 16; ++p) {
    if (p % 4 == 0) TextPage(m[1].data() + p * 4096, 4096, "kernel text at 0x" + std::to_string(0x100 + p) + "000");
  }
  return m;
}

void X86Regions(schema::Manifest::Builder m) {
  auto r = m.getMemory().initRegions(2);
  r[0].setSlot(0);
  r[0].setGuestPhysAddr(0);
  r[0].setSize(64 * 4096);
  r[0].setName("low");
  r[1].setSlot(1);
  r[1].setGuestPhysAddr(0x100000);
  r[1].setSize(16 * 4096);
  r[1].setFlags(1);  // KVM_MEM_LOG_DIRTY_PAGES
  r[1].setName("ram");
}

Status WriteX86(const std::string& path, layout::SnapshotId* id) {
  auto mem = X86Memory();
  return Write(path, Opts(4096, 16), [&](SnapshotWriter& w) {
    auto m = w.manifest();
    m.setArch(schema::Arch::X8664);
    SetCreation(m, "Intel(R) Xeon(R) Golden CPU @ 3.00GHz");
    X86Regions(m);
    auto v = m.initVcpus(2);
    for (unsigned i = 0; i < 2; ++i) {
      v[i].setId(i);
      FillX86Vcpu(v[i].initX8664(), int(i), 0x100000);
    }
    FillX86Vm(m.initVm().initX8664());
    auto dev = m.initDevices(1);
    dev[0].setName("serial0");
    dev[0].setVersion(1);
    const uint8_t uart[] = {0x00, 0x01, 0x03, 0x60, 0x00};
    dev[0].setData(kj::arrayPtr(uart, sizeof uart));
    SetSave(m, "zstd:3");
    VMSNAP_RETURN_IF_ERROR(w.AddMemory(0, mem[0].data(), mem[0].size()));
    return w.AddMemory(0x100000, mem[1].data(), mem[1].size());
  }, id);
}

// The child: pages 2 and 40 of region 0 changed (2 rewritten, 40 zeroed) and
// page 5 of region 1 written; rip moved on.
Status WriteX86Child(const std::string& path, const layout::SnapshotId& parent,
                     const std::string& parent_path) {
  auto mem = X86Memory();
  TextPage(mem[0].data() + 2 * 4096, 4096, "child rewrote page 2");
  std::memset(mem[0].data() + 40 * 4096, 0, 4096);
  TextPage(mem[1].data() + 5 * 4096, 4096, "child wrote page 0x105000");
  return Write(path, Opts(4096, 16), [&](SnapshotWriter& w) {
    auto m = w.manifest();
    m.setArch(schema::Arch::X8664);
    SetCreation(m, "Intel(R) Xeon(R) Golden CPU @ 3.00GHz");
    m.getCreated().setTimeUnixNs(kTime + 5000000000);
    auto p = m.initParent();
    p.setSnapshotId(kj::arrayPtr(parent.data(), parent.size()));
    p.setPath(parent_path.c_str());
    p.setDepth(1);
    X86Regions(m);
    auto v = m.initVcpus(2);
    for (unsigned i = 0; i < 2; ++i) {
      v[i].setId(i);
      FillX86Vcpu(v[i].initX8664(), int(i), 0x100200);
    }
    FillX86Vm(m.initVm().initX8664());
    SetSave(m, "zstd:3");
    m.getSave().setLive(true);
    m.getSave().setRounds(3);
    uint8_t def0[8] = {}, def1[2] = {};
    def0[2 / 8] |= 1 << 2;
    def0[40 / 8] |= 1 << (40 % 8);
    def1[0] |= 1 << 5;
    VMSNAP_RETURN_IF_ERROR(w.AddPages(0, mem[0].data(), mem[0].size(), def0));
    return w.AddPages(0x100000, mem[1].data(), mem[1].size(), def1);
  });
}

// ---------------------------------------------------------------- s390x

Status WriteS390(const std::string& path) {
  Bytes mem(32 * 4096, 0);
  for (int p = 0; p < 32; p += 3) TextPage(mem.data() + p * 4096, 4096, "s390x lowcore/page " + std::to_string(p));
  return Write(path, Opts(4096, 8), [&](SnapshotWriter& w) {
    auto m = w.manifest();
    m.setArch(schema::Arch::S390X);
    SetCreation(m, "IBM/S390 golden");
    auto r = m.getMemory().initRegions(1);
    r[0].setSize(mem.size());
    r[0].setName("ram");
    auto v = m.initVcpus(2);
    for (unsigned i = 0; i < 2; ++i) {
      v[i].setId(i);
      auto c = v[i].initS390x();
      c.setMpState(i == 0 ? 7 : 4);  // OPERATING, STOPPED
      auto g = c.initGprs(16);
      auto a = c.initAcrs(16);
      auto cr = c.initCrs(16);
      auto f = c.initFprs(16);
      for (unsigned k = 0; k < 16; ++k) {
        g.set(k, 0x5390000000000000ull | uint64_t(i) << 8 | k);
        a.set(k, k == 0 ? 0x3ff : 0);
        cr.set(k, k == 0 ? 0x14066a00 : k == 14 ? 0xc2000000 : 0);
        f.set(k, 0x4010000000000000ull + k);  // 4.0, ...
      }
      c.setFpc(0x00080000);
      c.setPswMask(0x0706000180000000ull);
      c.setPswAddr(0x10000 + 0x100 * i);
      c.setPrefix(0x1000 * (i + 1) * 2);
      c.setCpuTimer(0x7fffffff00000000ull);
      c.setClockComparator(0xdeadbeef00000000ull);
      c.setTodpr(0x1);
      c.setPp(0);
      c.setGbea(1);
    }
    auto vm = m.initVm().initS390x();
    vm.setCmmaEnabled(true);
    auto runs = vm.initCmma(2);
    runs[0].setStartGfn(0);
    const uint8_t c0[] = {0, 0, 1, 1, 2, 3, 4, 0};  // stable, unused, pot. volatile, volatile, NODAT
    runs[0].setValues(kj::arrayPtr(c0, sizeof c0));
    runs[1].setStartGfn(16);
    const uint8_t c1[] = {1, 1, 1, 1};
    runs[1].setValues(kj::arrayPtr(c1, sizeof c1));
    vm.setSkeysUsed(true);
    auto sk = vm.initSkeys(1);
    sk[0].setStartGfn(0);
    uint8_t keys[32];
    for (int k = 0; k < 32; ++k) keys[k] = uint8_t((k % 16) << 4 | (k % 2 ? 0x06 : 0x00));  // acc, R|C
    sk[0].setKeys(kj::arrayPtr(keys, sizeof keys));
    vm.setTodHigh(0);
    vm.setTodLow(0xd1c2b3a4f5e60718ull);
    SetSave(m, "zstd:3");
    return w.AddMemory(0, mem.data(), mem.size());
  });
}

// ---------------------------------------------------------------- ppc64

Status WritePpc(const std::string& path) {
  const uint32_t ps = 65536;
  Bytes mem(4 * ps, 0);
  TextPage(mem.data(), ps, "ppc64 golden: exception vectors");
  TextPage(mem.data() + 2 * ps, ps, "ppc64 golden: kernel at 0x20000");
  return Write(path, Opts(ps, 2), [&](SnapshotWriter& w) {
    auto m = w.manifest();
    m.setArch(schema::Arch::PPC64);
    SetCreation(m, "POWER9 (architected), altivec supported");
    auto r = m.getMemory().initRegions(1);
    r[0].setSize(mem.size());
    r[0].setName("ram");
    auto v = m.initVcpus(1);
    v[0].setId(0);
    auto c = v[0].initPpc64();
    c.setMpState(0);
    c.setPc(0xc000000000010000ull);
    c.setCr(0x24000882);
    c.setCtr(0x10);
    c.setLr(0xc00000000000c0ffull);
    c.setXer(0x20000000);
    c.setMsr(0x8000000000001033ull);  // SF | ME | IR | DR | RI | LE
    c.setSrr0(0xc000000000001234ull);
    c.setSrr1(0x8000000000001033ull);
    c.setPid(0);
    auto sprg = c.initSprg(8);
    for (unsigned k = 0; k < 8; ++k) sprg.set(k, 0xc000000001000000ull + k * 8);
    auto gpr = c.initGpr(32);
    for (unsigned k = 0; k < 32; ++k) gpr.set(k, 0x0101010101010101ull * k);
    c.setPvr(0x004e1202);  // POWER9 DD2.2
    c.setSdr1(0);
    auto slb = c.initSlb(2);
    slb[0].setEsid(0xc000000008000000ull);  // ESID 0xc00000000, V, index 0
    slb[0].setVsid(0x0000400ea1b217c00ull >> 4);
    slb[1].setEsid(0x0000000008000001ull);
    slb[1].setVsid(0x0000000000400c00ull);
    auto one = c.initOneRegs(3);
    one[0].setId(0x603000000000008cull);  // KVM_REG_PPC_DEC
    one[0].setName("DEC");
    one[0].setValue(0x7fffffff);
    one[1].setId(0x60300000000000b5ull);
    one[1].setName("TB_OFFSET");
    one[1].setValue(0xfffffff000000000ull);
    one[2].setId(0x6040000000000090ull);  // a 128-bit VSX register
    one[2].setName("VSR0");
    const uint8_t vsx[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                             0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
    one[2].setWide(kj::arrayPtr(vsx, sizeof vsx));
    auto htab = m.initVm().initPpc64().initHtab();
    htab.setShift(18);
    htab.setBoltedOnly(false);
    auto e = htab.initEntries(3);
    // v: AVPN << 7 | B(bits 62-63) | L | H | BOLTED (0x10) | VALID (0x1)
    e[0].setIndex(0);
    e[0].setV(0x4000000000000011ull | 0x00000c0000000000ull);  // bolted, valid, 1T segment
    e[0].setR(0x0000000000000190ull);                          // RPN 0, R, C, M, PP=0
    e[1].setIndex(8);
    e[1].setV(0x0000012345678001ull);                          // valid, not bolted
    e[1].setR(0x0000000000020182ull);
    e[2].setIndex(4095);
    e[2].setV(0x00000abcdef00011ull);                          // bolted, valid
    e[2].setR(0x0000000000030003ull);                          // PP=3 (read-only)
    SetSave(m, "zstd:3");
    return w.AddMemory(0, mem.data(), mem.size());
  });
}

// ---------------------------------------------------------------- aarch64

// An arm64 Linux guest as KVM would list it: 2 vCPUs (vCPU 1 powered off by
// PSCI), a vGICv3 with 64 IRQs and an ITS, a pending SError on vCPU 0.
// Written as format 1.1, the first minor that holds aarch64 state.
Status WriteArm64(const std::string& path) {
  Bytes mem(16 * 4096, 0);
  TextPage(mem.data(), 4096, "aarch64 golden: vectors at 0x40000800");
  TextPage(mem.data() + 5 * 4096, 4096, "aarch64 golden: kernel text");
  WriterOptions o = Opts(4096, 8);
  o.format_minor = 1;
  return Write(path, o, [&](SnapshotWriter& w) {
    auto m = w.manifest();
    m.setArch(schema::Arch::AARCH64);
    SetCreation(m, "Neoverse-N1 golden");
    auto r = m.getMemory().initRegions(1);
    r[0].setGuestPhysAddr(0x40000000);
    r[0].setSize(mem.size());
    r[0].setName("ram");
    auto v = m.initVcpus(2);
    const uint64_t kCore = 0x6030000000100000ull, kSys = 0x6030000000130000ull;
    auto sys = [&](unsigned op0, unsigned op1, unsigned crn, unsigned crm, unsigned op2) {
      return kSys | op0 << 14 | op1 << 11 | crn << 7 | crm << 3 | op2;
    };
    for (unsigned i = 0; i < 2; ++i) {
      v[i].setId(i);
      auto c = v[i].initAarch64();
      c.setMpState(i == 0 ? 0 : 5);  // RUNNABLE, STOPPED (PSCI CPU_OFF)
      auto init = c.getInit();
      init.setTarget(5);  // GENERIC_V8
      auto f = init.initFeatures(7);
      f.set(0, (1u << 2) | (1u << 3) | (i == 1 ? 1u : 0u));  // PSCI_0_2, PMU_V3 (+ POWER_OFF)
      auto core = c.initCore();
      auto x = core.initX(31);
      for (unsigned k = 0; k < 31; ++k) x.set(k, 0xa64000000000ull | uint64_t(i) << 8 | k);
      core.setSpEl0(0x0000ffffc0de0000ull);
      core.setPc(0xffff800008010000ull + 0x40 * i);
      core.setPstate(0x3c5);  // EL1h, DAIF masked
      core.setSpEl1(0xffff80000a004000ull - 0x4000 * i);
      core.setElrEl1(0xffff800008123456ull);
      auto spsr = core.initSpsr(5);
      spsr.set(0, 0x60000005);
      auto fp = c.initFp();
      auto vr = fp.initV(32);
      for (unsigned k = 0; k < 32; ++k) {
        uint8_t b[16];
        for (int j = 0; j < 16; ++j) b[j] = uint8_t(k * 16 + j);
        vr.set(k, kj::arrayPtr(b, 16));
      }
      fp.setFpsr(0x10);
      fp.setFpcr(0x03000000);
      c.initSve();
      auto sr = c.initSysregs(8);
      const std::pair<uint64_t, uint64_t> regs[] = {
          {sys(3, 0, 0, 0, 5), 0x80000000ull | i},     // MPIDR_EL1
          {sys(3, 0, 1, 0, 0), 0x30d0599d},            // SCTLR_EL1: MMU on
          {sys(3, 0, 2, 0, 0), 0x41234000},            // TTBR0_EL1
          {sys(3, 0, 2, 0, 1), 0x4120e000},            // TTBR1_EL1
          {sys(3, 0, 2, 0, 2), 0x00000034b5193519ull}, // TCR_EL1: 4K granules, 48-bit
          {sys(3, 0, 10, 2, 0), 0x000000040044ffffull},// MAIR_EL1
          {sys(3, 0, 12, 0, 0), 0xffff800008010800ull},// VBAR_EL1
          {sys(3, 0, 15, 2, 1), 0x1},                  // an unnamed IMPLEMENTATION DEFINED one
      };
      for (unsigned k = 0; k < 8; ++k) {
        sr[k].setId(regs[k].first);
        sr[k].setValue(regs[k].second);
      }
      auto t = c.initTimer();
      t.setCtl(1);
      t.setCnt(0x123456789ull);
      t.setCval(0x123500000ull);
      t.setHasPtimer(true);
      t.setPctl(0);
      t.setPcnt(0x123456789ull + 0x1000);
      t.setPcval(0);
      auto fw = c.initFirmware(3);
      fw[0].setId(0x6030000000140000ull);  // PSCI_VERSION
      fw[0].setValue(0x10001);             // 1.1
      fw[1].setId(0x6030000000140001ull);
      fw[1].setValue(1);
      fw[2].setId(0x6030000000140002ull);
      fw[2].setValue(0);
      auto other = c.initOtherRegs(1);
      other[0].setId(0x6020000000110000ull);  // CCSIDR[0]
      const uint8_t ccsidr[4] = {0x1a, 0xe0, 0x0f, 0x70};
      other[0].setData(kj::arrayPtr(ccsidr, 4));
      auto ev = c.initEvents();
      ev.setSerrorPending(i == 0);
      ev.setSerrorHasEsr(i == 0);
      ev.setSerrorEsr(i == 0 ? 0x00000021 : 0);
      auto list = c.initRegList(4);
      list.set(0, kCore | 0x40);  // PC
      list.set(1, kCore | 0x42);  // PSTATE
      list.set(2, sys(3, 0, 1, 0, 0));
      list.set(3, 0x6030000000140000ull);
    }
    auto vm = m.initVm().initAarch64();
    auto gic = vm.initGic();
    gic.setPresent(true);
    gic.setDistBase(0x08000000);
    gic.setRedistBase(0x080a0000);
    gic.setNrIrqs(64);
    gic.setPendingTablesSaved(true);
    auto d = gic.initDist(3);
    d[0].setOffset(0x0);
    d[0].setValue(0x12);  // ARE_NS | EnableGrp1NS
    d[1].setOffset(0x104);
    d[1].setValue(0x00000003);
    d[2].setOffset(0x6100);
    d[2].setValue(0x1);
    auto cpus = gic.initCpus(2);
    for (unsigned i = 0; i < 2; ++i) {
      cpus[i].setMpidr(0x80000000ull | i);
      auto rd = cpus[i].initRedist(2);
      rd[0].setOffset(0x70);
      rd[0].setValue(0x40300000);
      rd[1].setOffset(0x10100);
      rd[1].setValue(0x08000000);  // PPI 27 (virtual timer) enabled
      auto icc = cpus[i].initSysregs(2);
      icc[0].setId(0xc664);  // ICC_CTLR_EL1 encoding
      icc[0].setValue(0x400);
      icc[1].setId(0xc230);  // ICC_PMR_EL1
      icc[1].setValue(0xf0);
      auto lv = cpus[i].initLevels(1);
      lv[0].setIntid(0);
      lv[0].setBits(i == 0 ? 0x08000000 : 0);
    }
    auto its = vm.initIts();
    its.setPresent(true);
    its.setBase(0x08080000);
    its.setTablesSaved(true);
    auto ir = its.initRegs(3);
    ir[0].setOffset(0x80);
    ir[0].setValue(0x8000000040300000ull);
    ir[1].setOffset(0x100);
    ir[1].setValue(0x8000000040310000ull);
    ir[2].setOffset(0x0);
    ir[2].setValue(1);
    SetSave(m, "zstd:3");
    return w.AddMemory(0x40000000, mem.data(), mem.size());
  });
}

Status Derive(const std::string& dir, const char* from, const char* to,
              const std::function<void(Bytes&)>& edit) {
  Bytes b = testing::ReadFileBytes(dir + "/" + from);
  if (b.empty()) return Status::Io(std::string("cannot read ") + from);
  edit(b);
  testing::WriteFileBytes(dir + "/" + to, b);
  return Status::Ok();
}

}  // namespace

Status GenerateAll(const std::string& dir) {
  for (const char* f : kAllFiles) ::unlink((dir + "/" + f).c_str());
  layout::SnapshotId x86_id;
  VMSNAP_RETURN_IF_ERROR(WriteX86(dir + "/" + kX86, &x86_id));
  VMSNAP_RETURN_IF_ERROR(WriteX86Child(dir + "/" + kX86Child, x86_id, kX86));
  VMSNAP_RETURN_IF_ERROR(WriteS390(dir + "/" + kS390));
  VMSNAP_RETURN_IF_ERROR(WritePpc(dir + "/" + kPpc));
  VMSNAP_RETURN_IF_ERROR(WriteArm64(dir + "/" + kArm64));
  VMSNAP_RETURN_IF_ERROR(WriteX86Child(dir + "/" + kMissingParent, x86_id, "does-not-exist.vmsnap"));
  VMSNAP_RETURN_IF_ERROR(Derive(dir, kS390, kNewerMinor, [](Bytes& b) {
    b = testing::RewriteManifest(b, [](schema::Manifest::Builder m) { m.setFormatMinor(9); });
    testing::SetHeaderVersion(b, 1, 9);
  }));
  VMSNAP_RETURN_IF_ERROR(Derive(dir, kS390, kBadMagic, [](Bytes& b) { b[0] = 'X'; }));
  VMSNAP_RETURN_IF_ERROR(
      Derive(dir, kS390, kNewerMajor, [](Bytes& b) { testing::SetHeaderVersion(b, 2, 0); }));
  VMSNAP_RETURN_IF_ERROR(Derive(dir, kS390, kTruncated, [](Bytes& b) {
    auto s = testing::FindSections(b);
    b.resize(s.manifest_offset + s.manifest_length / 2);
  }));
  VMSNAP_RETURN_IF_ERROR(Derive(dir, kS390, kBadManifestChecksum, [](Bytes& b) {
    auto s = testing::FindSections(b);
    b[s.manifest_offset + s.manifest_length / 2] ^= 0x01;
  }));
  VMSNAP_RETURN_IF_ERROR(Derive(dir, kS390, kBadChunkChecksum, [](Bytes& b) {
    auto r = SnapshotReader::OpenBuffer(b, "s390x");
    if (!r.ok()) return;
    const ChunkInfo& c = (*r)->chunk_index()[1];
    b[c.file_offset + c.stored_length / 2] ^= 0x01;  // the middle of chunk 1's stored bytes
  }));
  return Status::Ok();
}

Status GenerateFuzzSeeds(const std::string& dir) {
  Bytes mem(4 * 4096, 0);
  TextPage(mem.data() + 3 * 4096, 4096, "fuzz seed page");
  testing::Rng rng(1);
  auto region = [&](schema::Manifest::Builder m) {
    auto r = m.getMemory().initRegions(1);
    r[0].setGuestPhysAddr(0x10000);
    r[0].setSize(mem.size());
  };
  VMSNAP_RETURN_IF_ERROR(Write(dir + "/tiny-empty.vmsnap", Opts(4096, 2), [&](SnapshotWriter& w) {
    w.manifest().initVcpus(1)[0].initX8664().initRegs().setRip(0xfff0);
    return Status::Ok();
  }));
  VMSNAP_RETURN_IF_ERROR(Write(dir + "/tiny-zstd.vmsnap", Opts(4096, 2), [&](SnapshotWriter& w) {
    region(w.manifest());
    return w.AddMemory(0x10000, mem.data(), mem.size());
  }));
  Bytes one(4096);
  rng.Fill(one.data(), one.size());
  VMSNAP_RETURN_IF_ERROR(Write(dir + "/tiny-raw.vmsnap", [] {
    WriterOptions o = Opts(4096, 1);
    o.compression = schema::Compression::NONE;
    return o;
  }(), [&](SnapshotWriter& w) {
    auto r = w.manifest().getMemory().initRegions(1);
    r[0].setSize(4096);
    return w.AddMemory(0, one.data(), one.size());
  }));
  return Write(dir + "/tiny-incremental.vmsnap", Opts(4096, 4), [&](SnapshotWriter& w) {
    region(w.manifest());
    auto p = w.manifest().initParent();
    p.initSnapshotId(16);
    p.setPath("tiny-zstd.vmsnap");
    p.setDepth(1);
    const uint8_t defined = 0x9;  // pages 0 and 3
    return w.AddPages(0x10000, mem.data(), mem.size(), &defined);
  });
}

}  // namespace vmsnap::golden
