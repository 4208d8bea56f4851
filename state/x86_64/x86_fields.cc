// SPDX-License-Identifier: MIT
// x86 kernel structs <-> manifest fields; see x86_fields.h. Each struct's
// Encode is followed by its Decode, field for field in the same order.
#include "state/x86_64/x86_fields.h"

#include <cstring>
#include <string>

namespace vmsnap::state::x86 {
namespace {

void Encode(const kvm_segment& k, sx::Segment::Builder b) {
  b.setBase(k.base);
  b.setLimit(k.limit);
  b.setSelector(k.selector);
  b.setType(k.type);
  b.setPresent(k.present);
  b.setDpl(k.dpl);
  b.setDb(k.db);
  b.setS(k.s);
  b.setL(k.l);
  b.setG(k.g);
  b.setAvl(k.avl);
  b.setUnusable(k.unusable);
}
void Decode(sx::Segment::Reader r, kvm_segment& k) {
  k = {};
  k.base = r.getBase();
  k.limit = r.getLimit();
  k.selector = r.getSelector();
  k.type = r.getType();
  k.present = r.getPresent();
  k.dpl = r.getDpl();
  k.db = r.getDb();
  k.s = r.getS();
  k.l = r.getL();
  k.g = r.getG();
  k.avl = r.getAvl();
  k.unusable = r.getUnusable();
}

void Encode(const kvm_dtable& k, sx::DTable::Builder b) {
  b.setBase(k.base);
  b.setLimit(k.limit);
}
void Decode(sx::DTable::Reader r, kvm_dtable& k) {
  k = {};
  k.base = r.getBase();
  k.limit = r.getLimit();
}

// kvm_sregs and kvm_sregs2 share every field but the tail.
template <typename S>
void EncodeSregsCommon(const S& k, sx::Sregs::Builder b) {
  Encode(k.cs, b.initCs());
  Encode(k.ds, b.initDs());
  Encode(k.es, b.initEs());
  Encode(k.fs, b.initFs());
  Encode(k.gs, b.initGs());
  Encode(k.ss, b.initSs());
  Encode(k.tr, b.initTr());
  Encode(k.ldt, b.initLdt());
  Encode(k.gdt, b.initGdt());
  Encode(k.idt, b.initIdt());
  b.setCr0(k.cr0);
  b.setCr2(k.cr2);
  b.setCr3(k.cr3);
  b.setCr4(k.cr4);
  b.setCr8(k.cr8);
  b.setEfer(k.efer);
  b.setApicBase(k.apic_base);
}
template <typename S>
void DecodeSregsCommon(sx::Sregs::Reader r, S& k) {
  Decode(r.getCs(), k.cs);
  Decode(r.getDs(), k.ds);
  Decode(r.getEs(), k.es);
  Decode(r.getFs(), k.fs);
  Decode(r.getGs(), k.gs);
  Decode(r.getSs(), k.ss);
  Decode(r.getTr(), k.tr);
  Decode(r.getLdt(), k.ldt);
  Decode(r.getGdt(), k.gdt);
  Decode(r.getIdt(), k.idt);
  k.cr0 = r.getCr0();
  k.cr2 = r.getCr2();
  k.cr3 = r.getCr3();
  k.cr4 = r.getCr4();
  k.cr8 = r.getCr8();
  k.efer = r.getEfer();
  k.apic_base = r.getApicBase();
}

}  // namespace

void Encode(const kvm_regs& k, sx::Regs::Builder b) {
  b.setRax(k.rax); b.setRbx(k.rbx); b.setRcx(k.rcx); b.setRdx(k.rdx);
  b.setRsi(k.rsi); b.setRdi(k.rdi); b.setRsp(k.rsp); b.setRbp(k.rbp);
  b.setR8(k.r8);   b.setR9(k.r9);   b.setR10(k.r10); b.setR11(k.r11);
  b.setR12(k.r12); b.setR13(k.r13); b.setR14(k.r14); b.setR15(k.r15);
  b.setRip(k.rip); b.setRflags(k.rflags);
}
void Decode(sx::Regs::Reader r, kvm_regs& k) {
  k = {};
  k.rax = r.getRax(); k.rbx = r.getRbx(); k.rcx = r.getRcx(); k.rdx = r.getRdx();
  k.rsi = r.getRsi(); k.rdi = r.getRdi(); k.rsp = r.getRsp(); k.rbp = r.getRbp();
  k.r8 = r.getR8();   k.r9 = r.getR9();   k.r10 = r.getR10(); k.r11 = r.getR11();
  k.r12 = r.getR12(); k.r13 = r.getR13(); k.r14 = r.getR14(); k.r15 = r.getR15();
  k.rip = r.getRip(); k.rflags = r.getRflags();
}

void Encode(const kvm_sregs& k, sx::Sregs::Builder b) {
  EncodeSregsCommon(k, b);
  auto bm = b.initInterruptBitmap(4);
  for (unsigned i = 0; i < 4; ++i) bm.set(i, k.interrupt_bitmap[i]);
}
void Decode(sx::Sregs::Reader r, kvm_sregs& k) {
  k = {};
  DecodeSregsCommon(r, k);
  auto bm = r.getInterruptBitmap();
  for (unsigned i = 0; i < 4 && i < bm.size(); ++i) k.interrupt_bitmap[i] = bm[i];
}

void Encode(const kvm_sregs2& k, sx::Sregs::Builder b) {
  EncodeSregsCommon(k, b);
  if (k.flags & KVM_SREGS2_FLAGS_PDPTRS_VALID) {
    auto p = b.initPdptrs(4);
    for (unsigned i = 0; i < 4; ++i) p.set(i, k.pdptrs[i]);
  }
}
void Decode(sx::Sregs::Reader r, kvm_sregs2& k) {
  k = {};
  DecodeSregsCommon(r, k);
  if (r.getPdptrs().size() == 4) {
    k.flags |= KVM_SREGS2_FLAGS_PDPTRS_VALID;
    for (unsigned i = 0; i < 4; ++i) k.pdptrs[i] = r.getPdptrs()[i];
  }
}

Status Encode(const kvm_xcrs& k, sx::Vcpu::Builder b) {
  if (k.nr_xcrs > KVM_MAX_XCRS) return Status::Kvm("KVM_GET_XCRS: bad nr_xcrs " + std::to_string(k.nr_xcrs));
  auto list = b.initXcrs(k.nr_xcrs);
  for (unsigned i = 0; i < k.nr_xcrs; ++i) {
    list[i].setXcr(k.xcrs[i].xcr);
    list[i].setValue(k.xcrs[i].value);
  }
  return Status::Ok();
}
Status Decode(sx::Vcpu::Reader r, kvm_xcrs& k) {
  k = {};
  auto list = r.getXcrs();
  if (list.size() > KVM_MAX_XCRS) return Status::Corruption("too many XCRs in snapshot");
  k.nr_xcrs = list.size();
  for (unsigned i = 0; i < list.size(); ++i) {
    k.xcrs[i].xcr = list[i].getXcr();
    k.xcrs[i].value = list[i].getValue();
  }
  return Status::Ok();
}

void Encode(const kvm_debugregs& k, sx::DebugRegs::Builder b) {
  b.setDr0(k.db[0]); b.setDr1(k.db[1]); b.setDr2(k.db[2]); b.setDr3(k.db[3]);
  b.setDr6(k.dr6); b.setDr7(k.dr7); b.setFlags(k.flags);
}
void Decode(sx::DebugRegs::Reader r, kvm_debugregs& k) {
  k = {};
  k.db[0] = r.getDr0(); k.db[1] = r.getDr1(); k.db[2] = r.getDr2(); k.db[3] = r.getDr3();
  k.dr6 = r.getDr6(); k.dr7 = r.getDr7();
  k.flags = 0;
}

void Encode(const kvm_lapic_state& k, sx::Vcpu::Builder b) {
  b.setLapic(kj::arrayPtr(reinterpret_cast<const uint8_t*>(k.regs), sizeof k.regs));
}
Status Decode(sx::Vcpu::Reader r, kvm_lapic_state& k) {
  auto blob = r.getLapic();
  if (blob.size() != sizeof k.regs) return Status::Corruption("LAPIC image is not 1024 bytes");
  k = {};
  std::memcpy(k.regs, blob.begin(), sizeof k.regs);
  return Status::Ok();
}

void Encode(std::span<const kvm_msr_entry> k, sx::Vcpu::Builder b) {
  auto list = b.initMsrs(static_cast<unsigned>(k.size()));
  for (unsigned i = 0; i < k.size(); ++i) {
    list[i].setIndex(k[i].index);
    list[i].setValue(k[i].data);
  }
}
std::vector<kvm_msr_entry> DecodeMsrs(sx::Vcpu::Reader r) {
  std::vector<kvm_msr_entry> v;
  v.reserve(r.getMsrs().size());
  for (auto m : r.getMsrs()) {
    kvm_msr_entry e{};
    e.index = m.getIndex();
    e.data = m.getValue();
    v.push_back(e);
  }
  return v;
}

void Encode(const kvm_vcpu_events& k, sx::VcpuEvents::Builder b) {
  auto ex = b.initException();
  ex.setInjected(k.exception.injected);
  ex.setNr(k.exception.nr);
  ex.setHasErrorCode(k.exception.has_error_code);
  ex.setPending(k.exception.pending);
  ex.setErrorCode(k.exception.error_code);
  auto in = b.initInterrupt();
  in.setInjected(k.interrupt.injected);
  in.setNr(k.interrupt.nr);
  in.setSoft(k.interrupt.soft);
  in.setShadow(k.interrupt.shadow);
  auto nmi = b.initNmi();
  nmi.setInjected(k.nmi.injected);
  nmi.setPending(k.nmi.pending);
  nmi.setMasked(k.nmi.masked);
  b.setSipiVector(k.sipi_vector);
  b.setFlags(k.flags);
  auto smi = b.initSmi();
  smi.setSmm(k.smi.smm);
  smi.setPending(k.smi.pending);
  smi.setSmmInsideNmi(k.smi.smm_inside_nmi);
  smi.setLatchedInit(k.smi.latched_init);
  b.setTripleFault(k.triple_fault.pending);
  b.setExceptionHasPayload(k.exception_has_payload);
  b.setExceptionPayload(k.exception_payload);
}
void Decode(sx::VcpuEvents::Reader r, kvm_vcpu_events& k) {
  k = {};
  auto ex = r.getException();
  k.exception.injected = ex.getInjected();
  k.exception.nr = ex.getNr();
  k.exception.has_error_code = ex.getHasErrorCode();
  k.exception.pending = ex.getPending();
  k.exception.error_code = ex.getErrorCode();
  auto in = r.getInterrupt();
  k.interrupt.injected = in.getInjected();
  k.interrupt.nr = in.getNr();
  k.interrupt.soft = in.getSoft();
  k.interrupt.shadow = in.getShadow();
  auto nmi = r.getNmi();
  k.nmi.injected = nmi.getInjected();
  k.nmi.pending = nmi.getPending();
  k.nmi.masked = nmi.getMasked();
  k.sipi_vector = r.getSipiVector();
  k.flags = r.getFlags();
  auto smi = r.getSmi();
  k.smi.smm = smi.getSmm();
  k.smi.pending = smi.getPending();
  k.smi.smm_inside_nmi = smi.getSmmInsideNmi();
  k.smi.latched_init = smi.getLatchedInit();
  k.triple_fault.pending = r.getTripleFault();
  k.exception_has_payload = r.getExceptionHasPayload();
  k.exception_payload = r.getExceptionPayload();
}

void Encode(std::span<const kvm_cpuid_entry2> k, sx::Vcpu::Builder b) {
  auto list = b.initCpuid(static_cast<unsigned>(k.size()));
  for (unsigned i = 0; i < k.size(); ++i) {
    auto c = list[i];
    c.setFunction(k[i].function);
    c.setIndex(k[i].index);
    c.setFlags(k[i].flags);
    c.setEax(k[i].eax);
    c.setEbx(k[i].ebx);
    c.setEcx(k[i].ecx);
    c.setEdx(k[i].edx);
  }
}
std::vector<kvm_cpuid_entry2> DecodeCpuid(capnp::List<sx::CpuidEntry>::Reader r) {
  std::vector<kvm_cpuid_entry2> v;
  v.reserve(r.size());
  for (auto c : r) {
    kvm_cpuid_entry2 e{};
    e.function = c.getFunction();
    e.index = c.getIndex();
    e.flags = c.getFlags();
    e.eax = c.getEax();
    e.ebx = c.getEbx();
    e.ecx = c.getEcx();
    e.edx = c.getEdx();
    v.push_back(e);
  }
  return v;
}

void Encode(const kvm::x86::VmConfig& k, sx::VmConfig::Builder b) {
  b.setTssAddr(k.tss_addr);
  b.setIdentityMapAddr(k.identity_map_addr);
  b.setIrqchip(k.irqchip);
  b.setPit(k.pit);
  b.setPitFlags(k.pit_flags);
  b.setDirtyRingBytes(k.dirty_ring_bytes);
  auto caps = b.initEnabledCaps(static_cast<unsigned>(k.enabled_caps.size()));
  for (unsigned i = 0; i < k.enabled_caps.size(); ++i) {
    const auto& c = k.enabled_caps[i];
    caps[i].setCap(c.cap);
    caps[i].setName(c.name);
    auto args = caps[i].initArgs(static_cast<unsigned>(c.args.size()));
    for (unsigned j = 0; j < c.args.size(); ++j) args.set(j, c.args[j]);
  }
}
kvm::x86::VmConfig Decode(sx::VmConfig::Reader r) {
  kvm::x86::VmConfig k;
  k.tss_addr = r.getTssAddr();
  k.identity_map_addr = r.getIdentityMapAddr();
  k.irqchip = r.getIrqchip();
  k.pit = r.getPit();
  k.pit_flags = r.getPitFlags();
  k.dirty_ring_bytes = r.getDirtyRingBytes();
  for (auto cap : r.getEnabledCaps()) {
    kvm::x86::VmConfig::Cap c;
    c.cap = cap.getCap();
    c.name = cap.getName();
    for (uint64_t a : cap.getArgs()) c.args.push_back(a);
    k.enabled_caps.push_back(std::move(c));
  }
  return k;
}

void Encode(const kvm_pic_state& k, sx::Pic::Builder b) {
  b.setLastIrr(k.last_irr);
  b.setIrr(k.irr);
  b.setImr(k.imr);
  b.setIsr(k.isr);
  b.setPriorityAdd(k.priority_add);
  b.setIrqBase(k.irq_base);
  b.setReadReg(k.read_reg_select);
  b.setPollMode(k.poll);
  b.setSpecialMask(k.special_mask);
  b.setInitState(k.init_state);
  b.setAutoEoi(k.auto_eoi);
  b.setRotateOnAutoEoi(k.rotate_on_auto_eoi);
  b.setSpecialFullyNested(k.special_fully_nested_mode);
  b.setInit4(k.init4);
  b.setElcr(k.elcr);
  b.setElcrMask(k.elcr_mask);
}
void Decode(sx::Pic::Reader r, kvm_pic_state& k) {
  k = {};
  k.last_irr = r.getLastIrr();
  k.irr = r.getIrr();
  k.imr = r.getImr();
  k.isr = r.getIsr();
  k.priority_add = r.getPriorityAdd();
  k.irq_base = r.getIrqBase();
  k.read_reg_select = r.getReadReg();
  k.poll = r.getPollMode();
  k.special_mask = r.getSpecialMask();
  k.init_state = r.getInitState();
  k.auto_eoi = r.getAutoEoi();
  k.rotate_on_auto_eoi = r.getRotateOnAutoEoi();
  k.special_fully_nested_mode = r.getSpecialFullyNested();
  k.init4 = r.getInit4();
  k.elcr = r.getElcr();
  k.elcr_mask = r.getElcrMask();
}

void Encode(const kvm_ioapic_state& k, sx::Ioapic::Builder b) {
  b.setBaseAddress(k.base_address);
  b.setIoregsel(k.ioregsel);
  b.setId(k.id);
  b.setIrr(k.irr);
  auto rt = b.initRedirtbl(KVM_IOAPIC_NUM_PINS);
  for (unsigned i = 0; i < KVM_IOAPIC_NUM_PINS; ++i) rt.set(i, k.redirtbl[i].bits);
}
Status Decode(sx::Ioapic::Reader r, kvm_ioapic_state& k) {
  auto rt = r.getRedirtbl();
  if (rt.size() != KVM_IOAPIC_NUM_PINS) {
    return Status::Corruption("IOAPIC state has " + std::to_string(rt.size()) + " pins");
  }
  k = {};
  k.base_address = r.getBaseAddress();
  k.ioregsel = r.getIoregsel();
  k.id = r.getId();
  k.irr = r.getIrr();
  for (unsigned i = 0; i < KVM_IOAPIC_NUM_PINS; ++i) k.redirtbl[i].bits = rt[i];
  return Status::Ok();
}

void Encode(const kvm_pit_state2& k, sx::Pit::Builder b) {
  b.setFlags(k.flags);
  auto ch = b.initChannels(3);
  for (unsigned i = 0; i < 3; ++i) {
    const kvm_pit_channel_state& c = k.channels[i];
    ch[i].setCount(c.count);
    ch[i].setLatchedCount(c.latched_count);
    ch[i].setCountLatched(c.count_latched);
    ch[i].setStatusLatched(c.status_latched);
    ch[i].setStatus(c.status);
    ch[i].setReadState(c.read_state);
    ch[i].setWriteState(c.write_state);
    ch[i].setWriteLatch(c.write_latch);
    ch[i].setRwMode(c.rw_mode);
    ch[i].setMode(c.mode);
    ch[i].setBcd(c.bcd);
    ch[i].setGate(c.gate);
    ch[i].setCountLoadTime(c.count_load_time);
  }
}
Status Decode(sx::Pit::Reader r, kvm_pit_state2& k) {
  auto ch = r.getChannels();
  if (ch.size() != 3) return Status::Corruption("PIT state has " + std::to_string(ch.size()) + " channels");
  k = {};
  k.flags = r.getFlags();
  for (unsigned i = 0; i < 3; ++i) {
    kvm_pit_channel_state& c = k.channels[i];
    c.count = ch[i].getCount();
    c.latched_count = ch[i].getLatchedCount();
    c.count_latched = ch[i].getCountLatched();
    c.status_latched = ch[i].getStatusLatched();
    c.status = ch[i].getStatus();
    c.read_state = ch[i].getReadState();
    c.write_state = ch[i].getWriteState();
    c.write_latch = ch[i].getWriteLatch();
    c.rw_mode = ch[i].getRwMode();
    c.mode = ch[i].getMode();
    c.bcd = ch[i].getBcd();
    c.gate = ch[i].getGate();
    c.count_load_time = ch[i].getCountLoadTime();
  }
  return Status::Ok();
}

void Encode(const kvm_clock_data& k, sx::Clock::Builder b) {
  b.setClock(k.clock);
  b.setFlags(k.flags);
  b.setRealtime(k.realtime);
  b.setHostTsc(k.host_tsc);
}
void Decode(sx::Clock::Reader r, kvm_clock_data& k) {
  k = {};
  k.clock = r.getClock();
  k.flags = r.getFlags();
  k.realtime = r.getRealtime();
  k.host_tsc = r.getHostTsc();
}

}  // namespace vmsnap::state::x86
