// SPDX-License-Identifier: MIT
// QEMU x86-64 sections -> vmsnap manifest: see qemu_x86.h and docs/interop-qemu.md.
#include "interop/qemu_x86.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

namespace vmsnap::interop::qemu {
namespace {

namespace sx = schema::x86;

// QEMU's segment "flags" hold the descriptor's second dword (type at bit 8).
constexpr uint32_t kDescS = 1u << 12, kDescP = 1u << 15, kDescAvl = 1u << 20, kDescL = 1u << 21,
                   kDescB = 1u << 22, kDescG = 1u << 23;
// QEMU's hflags/hflags2 bits that carry architectural state.
constexpr uint32_t kHfInhibitIrq = 1u << 3, kHfSmm = 1u << 19;
constexpr uint32_t kHf2NmiMask = 1u << 2;
// KVM_MP_STATE_*, KVM_VCPUEVENT_VALID_*.
constexpr uint32_t kMpRunnable = 0, kMpInitReceived = 2, kMpHalted = 3;
constexpr uint32_t kEventsValidNmiPending = 1, kEventsValidSipi = 2, kEventsValidShadow = 4;

void PutSegment(sx::Segment::Builder b, const DeviceSection& cpu, const std::string& p) {
  uint32_t flags = static_cast<uint32_t>(cpu.U(p + "flags"));
  b.setSelector(static_cast<uint16_t>(cpu.U(p + "selector")));
  b.setBase(cpu.U(p + "base"));
  b.setLimit(static_cast<uint32_t>(cpu.U(p + "limit")));
  b.setType((flags >> 8) & 15);
  b.setPresent((flags & kDescP) ? 1 : 0);
  b.setDpl((flags >> 13) & 3);
  b.setDb((flags & kDescB) ? 1 : 0);
  b.setS((flags & kDescS) ? 1 : 0);
  b.setL((flags & kDescL) ? 1 : 0);
  b.setG((flags & kDescG) ? 1 : 0);
  b.setAvl((flags & kDescAvl) ? 1 : 0);
  b.setUnusable((flags & kDescP) ? 0 : 1);
}

void Le(uint8_t* p, uint64_t v, unsigned bytes) {
  for (unsigned i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// The XSAVE area as KVM_GET_XSAVE gives it (standard format, 4 KiB).
std::vector<uint8_t> BuildXsave(const DeviceSection& cpu, uint64_t xcr0) {
  std::vector<uint8_t> x(4096, 0);
  Le(&x[0], cpu.U("env.fpuc"), 2);
  Le(&x[2], cpu.U("env.fpus_vmstate"), 2);
  Le(&x[4], cpu.U("env.fptag_vmstate") & 0xff, 1);  // QEMU saves the abridged tag (1 = valid)
  Le(&x[6], cpu.U("env.fpop"), 2);
  Le(&x[8], cpu.U("env.fpip"), 8);
  Le(&x[16], cpu.U("env.fpdp"), 8);
  Le(&x[24], cpu.U("env.mxcsr"), 4);
  Le(&x[28], 0xffff, 4);  // MXCSR_MASK as KVM reports it
  for (int i = 0; i < 8; ++i) {
    std::string p = "env.fpregs[" + std::to_string(i) + "].tmp.";
    Le(&x[32 + 16 * i], cpu.U(p + "tmp_mant"), 8);
    Le(&x[32 + 16 * i + 8], cpu.U(p + "tmp_exp"), 2);
  }
  for (int i = 0; i < 16; ++i) {
    std::string p = "env.xmm_regs[0][" + std::to_string(i) + "]._q_ZMMReg[";
    Le(&x[160 + 16 * i], cpu.U(p + "0]"), 8);
    Le(&x[160 + 16 * i + 8], cpu.U(p + "1]"), 8);
    std::string h = "env.xmm_regs[1][" + std::to_string(i) + "]._q_ZMMReg[";
    Le(&x[576 + 16 * i], cpu.U(h + "2]"), 8);
    Le(&x[576 + 16 * i + 8], cpu.U(h + "3]"), 8);
  }
  // x87 and SSE state are always meaningful in QEMU's fields; a clear bit
  // would make KVM load them at their init values instead.
  uint64_t bv = (cpu.U("env.xstate_bv") | 3) & (xcr0 | 3);
  Le(&x[512], bv, 8);
  return x;
}

// struct kvm_lapic_state.regs from QEMU's apic section (registers at index << 4).
std::vector<uint8_t> BuildLapic(const DeviceSection& a) {
  std::vector<uint8_t> r(1024, 0);
  auto set = [&r](unsigned reg, uint64_t v) { Le(&r[reg << 4], v, 4); };
  set(0x2, a.U("id") << 24);
  set(0x3, 0x50014);  // version 0x14, 6 LVT entries, as KVM's LAPIC reports
  set(0x8, a.U("tpr"));
  set(0xd, a.U("log_dest") << 24);
  set(0xe, (a.U("dest_mode") << 28) | 0x0fffffff);
  set(0xf, a.U("spurious_vec"));
  for (unsigned i = 0; i < 8; ++i) {
    set(0x10 + i, a.U("isr", i));
    set(0x18 + i, a.U("tmr", i));
    set(0x20 + i, a.U("irr", i));
  }
  set(0x28, a.U("esr"));
  set(0x30, a.U("icr", 0));
  set(0x31, a.U("icr", 1));
  for (unsigned i = 0; i < 6; ++i) set(0x32 + i, a.U("lvt", i));
  set(0x38, a.U("initial_count"));
  set(0x3e, a.U("divide_conf"));
  return r;
}

void PutPic(sx::Pic::Builder p, const DeviceSection& s, bool master) {
  p.setLastIrr(static_cast<uint8_t>(s.U("last_irr")));
  p.setIrr(static_cast<uint8_t>(s.U("irr")));
  p.setImr(static_cast<uint8_t>(s.U("imr")));
  p.setIsr(static_cast<uint8_t>(s.U("isr")));
  p.setPriorityAdd(static_cast<uint8_t>(s.U("priority_add")));
  p.setIrqBase(static_cast<uint8_t>(s.U("irq_base")));
  p.setReadReg(static_cast<uint8_t>(s.U("read_reg_select")));
  p.setPollMode(static_cast<uint8_t>(s.U("poll")));
  p.setSpecialMask(static_cast<uint8_t>(s.U("special_mask")));
  p.setInitState(static_cast<uint8_t>(s.U("init_state")));
  p.setAutoEoi(static_cast<uint8_t>(s.U("auto_eoi")));
  p.setRotateOnAutoEoi(static_cast<uint8_t>(s.U("rotate_on_auto_eoi")));
  p.setSpecialFullyNested(static_cast<uint8_t>(s.U("special_fully_nested_mode")));
  p.setInit4(static_cast<uint8_t>(s.U("init4")));
  p.setElcr(static_cast<uint8_t>(s.U("elcr")));
  p.setElcrMask(master ? 0xf8 : 0xde);  // KVM's fixed ELCR masks
  if (master) {
    // QEMU's PIT drives IRQ0 as a level it raises and lowers; KVM's PIT only
    // pulses it. A saved last_irr bit 0 makes KVM's PIC see no new edge, so
    // the in-kernel PIT would never interrupt again.
    p.setLastIrr(p.getLastIrr() & 0xfe);
  }
}

bool AllZero(const std::vector<uint8_t>& v) {
  return std::all_of(v.begin(), v.end(), [](uint8_t b) { return b == 0; });
}

struct MsrMap {
  const char* field;
  uint32_t index;
};
// Fields of the cpu section (and its subsections) that are MSRs.
constexpr MsrMap kMsrs[] = {
    {"env.tsc", 0x10},
    {"env.sysenter_cs", 0x174},
    {"env.sysenter_esp", 0x175},
    {"env.sysenter_eip", 0x176},
    {"env.pat", 0x277},
    {"env.mtrr_deftype", 0x2ff},
    {"env.star", 0xc0000081},
    {"env.lstar", 0xc0000082},
    {"env.cstar", 0xc0000083},
    {"env.fmask", 0xc0000084},
    {"env.kernelgsbase", 0xc0000102},
    {"env.tsc_aux", 0xc0000103},
    {"env.tsc_adjust", 0x3b},
    {"env.msr_ia32_feature_control", 0x3a},
    {"env.spec_ctrl", 0x48},
    {"env.xss", 0xda0},
    {"env.umwait", 0xe1},
    {"env.tsx_ctrl", 0x122},
    {"env.async_pf_en_msr", 0x4b564d02},
    {"env.pv_eoi_en_msr", 0x4b564d04},
    {"env.steal_time_msr", 0x4b564d03},
    {"env.poll_control_msr", 0x4b564d05},
};
constexpr uint32_t kMtrrFixed[11] = {0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f};

uint32_t PhysBits(const std::vector<CpuidLeaf>& cpuid) {
  for (const auto& e : cpuid) {
    if (e.function == 0x80000008 && (e.eax & 0xff) != 0) return e.eax & 0xff;
  }
  return 36;
}

Status PutVcpu(const Stream& s, uint32_t index, uint32_t count, const ImportOptions& opt,
               sx::Vcpu::Builder v, std::set<std::string>& warn, std::set<std::string>& mapped) {
  const DeviceSection* cpu = s.Find("cpu", index);
  if (!cpu) return Status::Corruption("the stream has no 'cpu' section for vCPU " + std::to_string(index));
  if (cpu->version != 12) {
    return Status::Unsupported("section 'cpu' instance " + std::to_string(index) + " at offset " +
                               std::to_string(cpu->stream_offset) + " has version " + std::to_string(cpu->version) +
                               ", which is not supported (only version 12 is mapped)");
  }
  mapped.insert("cpu#" + std::to_string(index));
  const DeviceSection* apic = s.Find("apic", index);
  if (apic) mapped.insert("apic#" + std::to_string(index));
  const DeviceSection* common = s.Find("cpu_common", index);
  if (common) mapped.insert("cpu_common#" + std::to_string(index));

  auto r = v.initRegs();
  // QEMU's general registers are in the encoding's order.
  r.setRax(cpu->U("env.regs", 0));
  r.setRcx(cpu->U("env.regs", 1));
  r.setRdx(cpu->U("env.regs", 2));
  r.setRbx(cpu->U("env.regs", 3));
  r.setRsp(cpu->U("env.regs", 4));
  r.setRbp(cpu->U("env.regs", 5));
  r.setRsi(cpu->U("env.regs", 6));
  r.setRdi(cpu->U("env.regs", 7));
  r.setR8(cpu->U("env.regs", 8));
  r.setR9(cpu->U("env.regs", 9));
  r.setR10(cpu->U("env.regs", 10));
  r.setR11(cpu->U("env.regs", 11));
  r.setR12(cpu->U("env.regs", 12));
  r.setR13(cpu->U("env.regs", 13));
  r.setR14(cpu->U("env.regs", 14));
  r.setR15(cpu->U("env.regs", 15));
  r.setRip(cpu->U("env.eip"));
  r.setRflags(cpu->U("env.eflags"));

  auto sr = v.initSregs();
  // QEMU's segment order: ES, CS, SS, DS, FS, GS.
  PutSegment(sr.initEs(), *cpu, "env.segs[0].");
  PutSegment(sr.initCs(), *cpu, "env.segs[1].");
  PutSegment(sr.initSs(), *cpu, "env.segs[2].");
  PutSegment(sr.initDs(), *cpu, "env.segs[3].");
  PutSegment(sr.initFs(), *cpu, "env.segs[4].");
  PutSegment(sr.initGs(), *cpu, "env.segs[5].");
  PutSegment(sr.initLdt(), *cpu, "env.ldt.");
  PutSegment(sr.initTr(), *cpu, "env.tr.");
  sr.initGdt().setBase(cpu->U("env.gdt.base"));
  sr.getGdt().setLimit(static_cast<uint16_t>(cpu->U("env.gdt.limit")));
  sr.initIdt().setBase(cpu->U("env.idt.base"));
  sr.getIdt().setLimit(static_cast<uint16_t>(cpu->U("env.idt.limit")));
  sr.setCr0(cpu->U("env.cr[0]"));
  sr.setCr2(cpu->U("env.cr[2]"));
  sr.setCr3(cpu->U("env.cr[3]"));
  sr.setCr4(cpu->U("env.cr[4]"));
  sr.setEfer(cpu->U("env.efer"));
  uint64_t apic_base = apic ? apic->U("apicbase") : (0xfee00000ull | 0x800 | (index == 0 ? 0x100 : 0));
  sr.setApicBase(apic_base);
  sr.setCr8(apic ? (apic->U("tpr") >> 4) & 15 : 0);
  int32_t injected_irq = static_cast<int32_t>(cpu->U("env.interrupt_injected"));
  auto bitmap = sr.initInterruptBitmap(4);
  if (injected_irq >= 0 && injected_irq < 256) bitmap.set(injected_irq / 64, 1ull << (injected_irq % 64));

  auto dr = v.initDebugregs();
  dr.setDr0(cpu->U("env.dr", 0));
  dr.setDr1(cpu->U("env.dr", 1));
  dr.setDr2(cpu->U("env.dr", 2));
  dr.setDr3(cpu->U("env.dr", 3));
  dr.setDr6(cpu->U("env.dr", 6));
  dr.setDr7(cpu->U("env.dr", 7));

  uint64_t xcr0 = cpu->U("env.xcr0");
  if (!(xcr0 & 1)) xcr0 = 1;  // x87 is always enabled; QEMU leaves 0 without XSAVE
  std::vector<uint8_t> xs = BuildXsave(*cpu, xcr0);
  v.setXsave(capnp::Data::Reader(xs.data(), xs.size()));
  auto xcrs = v.initXcrs(1);
  xcrs[0].setXcr(0);
  xcrs[0].setValue(xcr0);
  if (cpu->HasSubsection("cpu/avx512") || cpu->HasSubsection("cpu/pkru") || cpu->HasSubsection("cpu/amx")) {
    warn.insert("AVX-512, PKRU and AMX state of the QEMU vCPU is not mapped (lost)");
  }

  if (apic) {
    std::vector<uint8_t> lapic = BuildLapic(*apic);
    v.setLapic(capnp::Data::Reader(lapic.data(), lapic.size()));
    if (apic->U("initial_count") != 0) {
      warn.insert("LAPIC timer: QEMU saves no current count; the timer restarts from its initial count");
    }
  } else {
    std::vector<uint8_t> lapic(1024, 0);
    v.setLapic(capnp::Data::Reader(lapic.data(), lapic.size()));
    warn.insert("no 'apic' section: the local APIC starts at its reset state");
  }

  // MSRs, sorted by index.
  std::map<uint32_t, uint64_t> msrs;
  for (const MsrMap& m : kMsrs) {
    if (cpu->Has(m.field)) msrs[m.index] = cpu->U(m.field);
  }
  for (unsigned i = 0; i < 11; ++i) msrs[kMtrrFixed[i]] = cpu->U("env.mtrr_fixed", i);
  uint64_t phys_mask = (1ull << PhysBits(opt.cpuid)) - 1;
  for (unsigned i = 0; i < 8; ++i) {
    std::string p = "env.mtrr_var[" + std::to_string(i) + "].";
    uint64_t base = cpu->U(p + "base"), mask = cpu->U(p + "mask");
    if (!base && !mask) continue;
    // KVM refuses mask bits above the physical-address width; QEMU may carry them.
    msrs[0x200 + 2 * i] = base & (phys_mask | 0xfff);
    msrs[0x201 + 2 * i] = mask & (phys_mask | 0xfff);
  }
  if (cpu->U("env.system_time_msr")) msrs[0x4b564d01] = cpu->U("env.system_time_msr");
  if (cpu->U("env.wall_clock_msr")) msrs[0x4b564d00] = cpu->U("env.wall_clock_msr");
  if (cpu->U("env.mcg_status")) msrs[0x17a] = cpu->U("env.mcg_status");
  bool mce = cpu->U("env.mcg_ctl") != 0;
  for (uint32_t i = 0; i < 40; ++i) mce |= cpu->U("env.mce_banks", i) != 0;
  if (mce) warn.insert("machine-check state (MCG_CTL, MCE banks) is not mapped: KVM refuses QEMU's MCG_CTL = ~0");
  auto ml = v.initMsrs(static_cast<unsigned>(msrs.size()));
  unsigned mi = 0;
  for (auto [idx, val] : msrs) {
    ml[mi].setIndex(idx);
    ml[mi].setValue(val);
    ++mi;
  }

  // Events.
  auto ev = v.initEvents();
  uint32_t hflags = static_cast<uint32_t>(cpu->U("env.hflags"));
  uint32_t hflags2 = static_cast<uint32_t>(cpu->U("env.hflags2"));
  int32_t exc = static_cast<int32_t>(cpu->U("env.exception_nr"));
  if (exc >= 0 && exc < 32) {
    auto e = ev.initException();
    e.setInjected(1);
    e.setNr(static_cast<uint8_t>(exc));
    e.setHasErrorCode(static_cast<uint8_t>(cpu->U("env.has_error_code")));
    if (e.getHasErrorCode()) warn.insert("an exception's error code is not in QEMU's stream: it is restored as 0");
  }
  if (injected_irq >= 0 && injected_irq < 256) {
    ev.getInterrupt().setInjected(1);
    ev.getInterrupt().setNr(static_cast<uint8_t>(injected_irq));
    ev.getInterrupt().setSoft(static_cast<uint8_t>(cpu->U("env.soft_interrupt")));
  }
  if (hflags & kHfInhibitIrq) {
    ev.getInterrupt().setShadow(1);
    warn.insert("interrupt shadow: QEMU does not say whether STI or MOV SS caused it");
  }
  ev.getNmi().setInjected(static_cast<uint8_t>(cpu->U("env.nmi_injected")));
  ev.getNmi().setPending(static_cast<uint8_t>(cpu->U("env.nmi_pending")));
  ev.getNmi().setMasked((hflags2 & kHf2NmiMask) ? 1 : 0);
  ev.setSipiVector(static_cast<uint32_t>(cpu->U("env.sipi_vector")));
  if (hflags & kHfSmm) warn.insert("the vCPU was in SMM: SMM state is not mapped");
  ev.setFlags(kEventsValidNmiPending | kEventsValidSipi | kEventsValidShadow);

  // MP state: KVM saves it; under TCG only cpu_common.halted says anything.
  uint32_t mp = static_cast<uint32_t>(cpu->U("env.mp_state"));
  if (mp == kMpRunnable && common && common->U("halted")) {
    bool bsp = (apic_base & 0x100) != 0;
    mp = (!bsp && !(cpu->U("env.cr[0]") & 1)) ? kMpInitReceived : kMpHalted;
  }
  v.setMpState(mp);

  auto cl = v.initCpuid(static_cast<unsigned>(opt.cpuid.size()));
  for (unsigned i = 0; i < opt.cpuid.size(); ++i) {
    CpuidLeaf e = opt.cpuid[i];
    if (e.function == 1) {
      e.ebx = (e.ebx & 0x0000ffffu) | (count << 16) | (index << 24);
      e.ecx |= 1u << 31;
    }
    if (e.function == 0xb || e.function == 0x1f) e.edx = index;
    cl[i].setFunction(e.function);
    cl[i].setIndex(e.index);
    cl[i].setFlags(e.flags);
    cl[i].setEax(e.eax);
    cl[i].setEbx(e.ebx);
    cl[i].setEcx(e.ecx);
    cl[i].setEdx(e.edx);
  }
  v.setTscKhz(static_cast<uint32_t>(cpu->U("env.tsc_khz")));
  return Status::Ok();
}

}  // namespace

Result<Imported> ToManifest(const Stream& s, const ImportOptions& opt, schema::Manifest::Builder m) {
  Imported out;
  std::set<std::string> warn;
  std::set<std::string> mapped;
  m.setArch(schema::Arch::X8664);
  auto created = m.initCreated();
  created.setToolVersion(opt.tool_version);

  // Memory.
  const RamBlock* ram = s.FindBlock("pc.ram");
  if (!ram) ram = s.FindBlock("microvm.ram");
  if (!ram) return Status::Unsupported("the stream has no 'pc.ram' or 'microvm.ram' RAM block");
  uint64_t size = ram->data.size();
  uint64_t low = std::min(size, kLowRamEnd);
  const RamBlock* bios = s.machine == "microvm" ? s.FindBlock("pc.bios") : nullptr;
  if (bios && (bios->data.size() > 0x20000 || bios->data.size() % kPageSize != 0 || low < 0x100000)) bios = nullptr;
  if (bios) {
    // On microvm the last 64-128 KiB below 1 MiB show the BIOS block, not RAM.
    uint64_t at = 0x100000 - bios->data.size();
    out.memory.push_back({ram, 0, 0, at});
    out.memory.push_back({bios, 0, at, bios->data.size()});
    out.memory.push_back({ram, 0x100000, 0x100000, low - 0x100000});
    mapped.insert("ram:" + bios->name);
  } else {
    out.memory.push_back({ram, 0, 0, low});
  }
  if (size > low) out.memory.push_back({ram, low, kHighRamStart, size - low});
  mapped.insert("ram:" + ram->name);
  auto regions = m.initMemory();
  regions.setPageSize(4096);
  auto rl = regions.initRegions(size > low ? 2 : 1);
  rl[0].setSlot(0);
  rl[0].setGuestPhysAddr(0);
  rl[0].setSize(low);
  rl[0].setName("ram-low");
  if (size > low) {
    rl[1].setSlot(1);
    rl[1].setGuestPhysAddr(kHighRamStart);
    rl[1].setSize(size - low);
    rl[1].setName("ram-high");
  }

  // vCPUs: one 'cpu' section per vCPU, instance = index.
  uint32_t count = 0;
  while (s.Find("cpu", count)) ++count;
  if (count == 0) return Status::Corruption("the stream has no 'cpu' section");
  auto vcpus = m.initVcpus(count);
  for (uint32_t i = 0; i < count; ++i) {
    vcpus[i].setId(i);
    VMSNAP_RETURN_IF_ERROR(PutVcpu(s, i, count, opt, vcpus[i].initX8664(), warn, mapped));
  }

  // VM level.
  auto vm = m.initVm().initX8664();
  auto cfg = vm.initConfig();
  cfg.setTssAddr(0xfffbd000);
  cfg.setIdentityMapAddr(0xfffbc000);
  cfg.setIrqchip(true);
  cfg.setPit(true);
  cfg.setPitFlags(1);  // KVM_PIT_SPEAKER_DUMMY, as vmsnap's VMM creates it
  const DeviceSection* pic0 = s.Find("i8259", 0);
  const DeviceSection* pic1 = s.Find("i8259", 1);
  if (pic0 && pic1) {
    PutPic(vm.initPicMaster(), *pic0, true);
    PutPic(vm.initPicSlave(), *pic1, false);
    mapped.insert("i8259#0");
    mapped.insert("i8259#1");
    if (AllZero(pic0->data) && AllZero(pic1->data)) {
      warn.insert("the i8259 sections are all zero (QEMU's in-kernel irqchip does not save the PIC): PIC state cannot be trusted");
    }
  } else {
    warn.insert("no i8259 sections: the PICs start at their reset state");
  }
  if (const DeviceSection* io = s.Find("ioapic", 0)) {
    auto b = vm.initIoapic();
    b.setBaseAddress(0xfec00000);
    b.setId(static_cast<uint32_t>(io->U("id")));
    b.setIoregsel(static_cast<uint32_t>(io->U("ioregsel")));
    b.setIrr(static_cast<uint32_t>(io->U("irr")));
    auto t = b.initRedirtbl(24);
    for (unsigned i = 0; i < 24; ++i) t.set(i, io->U("ioredtbl", i));
    mapped.insert("ioapic#0");
  }
  if (const DeviceSection* pit = s.Find("i8254", 0)) {
    auto p = vm.initPit();
    auto ch = p.initChannels(3);
    for (unsigned i = 0; i < 3; ++i) {
      std::string n = "channels[" + std::to_string(i) + "].";
      ch[i].setCount(static_cast<uint32_t>(pit->U(n + "count")));
      ch[i].setLatchedCount(static_cast<uint16_t>(pit->U(n + "latched_count")));
      ch[i].setCountLatched(static_cast<uint8_t>(pit->U(n + "count_latched")));
      ch[i].setStatusLatched(static_cast<uint8_t>(pit->U(n + "status_latched")));
      ch[i].setStatus(static_cast<uint8_t>(pit->U(n + "status")));
      ch[i].setReadState(static_cast<uint8_t>(pit->U(n + "read_state")));
      ch[i].setWriteState(static_cast<uint8_t>(pit->U(n + "write_state")));
      ch[i].setWriteLatch(static_cast<uint8_t>(pit->U(n + "write_latch")));
      ch[i].setRwMode(static_cast<uint8_t>(pit->U(n + "rw_mode")));
      ch[i].setMode(static_cast<uint8_t>(pit->U(n + "mode")));
      ch[i].setBcd(static_cast<uint8_t>(pit->U(n + "bcd")));
      ch[i].setGate(static_cast<uint8_t>(pit->U(n + "gate")));
    }
    mapped.insert("i8254#0");
    warn.insert("PIT: QEMU's count-load times are virtual-clock times; each channel restarts its count on load");
  }
  if (const DeviceSection* kc = s.Find("kvmclock", 0)) {
    vm.initClock().setClock(kc->U("clock"));
    mapped.insert("kvmclock#0");
  }

  // Everything else, as QEMU wrote it.
  std::vector<std::pair<std::string, const DeviceSection*>> rest;
  for (const auto& d : s.sections) {
    if (!mapped.count(d.idstr + "#" + std::to_string(d.instance))) rest.emplace_back(d.idstr, &d);
  }
  std::vector<const RamBlock*> other_blocks;
  for (const auto& b : s.blocks) {
    if (&b != ram) other_blocks.push_back(&b);
  }
  auto devs = m.initDevices(static_cast<unsigned>(rest.size() + other_blocks.size() + 2));
  unsigned di = 0;
  devs[di].setName("qemu:machine");
  devs[di].setData(capnp::Data::Reader(reinterpret_cast<const uint8_t*>(s.machine.data()), s.machine.size()));
  ++di;
  devs[di].setName("qemu:vmdesc");
  devs[di].setData(capnp::Data::Reader(reinterpret_cast<const uint8_t*>(s.vmdesc.data()), s.vmdesc.size()));
  ++di;
  for (const auto& [name, d] : rest) {
    devs[di].setName("qemu:" + d->idstr + ":" + std::to_string(d->instance));
    devs[di].setVersion(d->version);
    devs[di].setData(capnp::Data::Reader(d->data.data(), d->data.size()));
    ++di;
  }
  for (const RamBlock* b : other_blocks) {
    devs[di].setName("qemu-ram:" + b->name);
    devs[di].setData(capnp::Data::Reader(b->data.data(), b->data.size()));
    ++di;
  }

  warn.insert("CPUID is not in QEMU's stream: taken from " + opt.cpuid_source);
  out.warnings.assign(warn.begin(), warn.end());
  return out;
}

}  // namespace vmsnap::interop::qemu
