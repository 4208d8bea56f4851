// SPDX-License-Identifier: MIT
// x86-64 capture: see x86_capture.h. The order of reads is documented in
// docs/state-coverage.md.
#include "capture/x86_64/x86_capture.h"

#include <algorithm>
#include <set>

namespace vmsnap::capture::x86 {
namespace sx = schema::x86;
namespace kx = kvm::x86;

namespace {

void PutSegment(const kvm_segment& s, sx::Segment::Builder b) {
  b.setBase(s.base);
  b.setLimit(s.limit);
  b.setSelector(s.selector);
  b.setType(s.type);
  b.setPresent(s.present);
  b.setDpl(s.dpl);
  b.setDb(s.db);
  b.setS(s.s);
  b.setL(s.l);
  b.setG(s.g);
  b.setAvl(s.avl);
  b.setUnusable(s.unusable);
}

void PutDtable(const kvm_dtable& d, sx::DTable::Builder b) {
  b.setBase(d.base);
  b.setLimit(d.limit);
}

// kvm_sregs and kvm_sregs2 share every field but the tail.
template <typename S>
void PutSregsCommon(const S& s, sx::Sregs::Builder b) {
  PutSegment(s.cs, b.initCs());
  PutSegment(s.ds, b.initDs());
  PutSegment(s.es, b.initEs());
  PutSegment(s.fs, b.initFs());
  PutSegment(s.gs, b.initGs());
  PutSegment(s.ss, b.initSs());
  PutSegment(s.tr, b.initTr());
  PutSegment(s.ldt, b.initLdt());
  PutDtable(s.gdt, b.initGdt());
  PutDtable(s.idt, b.initIdt());
  b.setCr0(s.cr0);
  b.setCr2(s.cr2);
  b.setCr3(s.cr3);
  b.setCr4(s.cr4);
  b.setCr8(s.cr8);
  b.setEfer(s.efer);
  b.setApicBase(s.apic_base);
}

void PutPic(const kvm_pic_state& p, sx::Pic::Builder b) {
  b.setLastIrr(p.last_irr);
  b.setIrr(p.irr);
  b.setImr(p.imr);
  b.setIsr(p.isr);
  b.setPriorityAdd(p.priority_add);
  b.setIrqBase(p.irq_base);
  b.setReadReg(p.read_reg_select);
  b.setPollMode(p.poll);
  b.setSpecialMask(p.special_mask);
  b.setInitState(p.init_state);
  b.setAutoEoi(p.auto_eoi);
  b.setRotateOnAutoEoi(p.rotate_on_auto_eoi);
  b.setSpecialFullyNested(p.special_fully_nested_mode);
  b.setInit4(p.init4);
  b.setElcr(p.elcr);
  b.setElcrMask(p.elcr_mask);
}

}  // namespace

X86Capturer::X86Capturer(kx::VmOps* vm, std::vector<kx::VcpuOps*> vcpus, kx::VmConfig config)
    : vm_(vm), vcpus_(std::move(vcpus)), config_(std::move(config)) {}

Result<std::vector<uint32_t>> X86Capturer::SavedMsrs() {
  if (msrs_probed_) return msrs_;
  if (vcpus_.empty()) return Status::InvalidArgument("capture: VM has no vCPUs");
  VMSNAP_ASSIGN_OR_RETURN(std::vector<uint32_t> listed, vm_->MsrIndexList());
  std::sort(listed.begin(), listed.end());
  std::set<uint32_t> candidates(listed.begin(), listed.end());
  for (uint32_t m : kx::UnlistedSavedMsrs()) candidates.insert(m);
  std::set<uint32_t> unlisted;
  for (uint32_t m : kx::UnlistedSavedMsrs()) {
    if (!std::binary_search(listed.begin(), listed.end(), m)) unlisted.insert(m);
  }
  std::vector<uint32_t> keep;
  for (uint32_t index : candidates) {
    // KVM lists some MSRs the vCPU's CPUID does not enable; a one-entry read
    // tells which ones this vCPU really has.
    std::vector<kvm_msr_entry> one(1);
    one[0].index = index;
    VMSNAP_ASSIGN_OR_RETURN(size_t n, vcpus_[0]->GetMsrs(one));
    if (n != 1) continue;
    if (unlisted.count(index)) {
      // An unlisted MSR is saved only if KVM also takes it back: writing the
      // value just read is harmless for these (MTRRs, TSC_AUX, XSS,
      // SPEC_CTRL), and some hosts read IA32_XSS but refuse to set it.
      VMSNAP_ASSIGN_OR_RETURN(size_t w, vcpus_[0]->SetMsrs(one));
      if (w != 1) continue;
    }
    keep.push_back(index);
  }
  msrs_ = std::move(keep);
  msrs_probed_ = true;
  return msrs_;
}

Status X86Capturer::CaptureVcpu(kx::VcpuOps& vcpu, sx::Vcpu::Builder out) {
  if (!caps_probed_) {
    VMSNAP_ASSIGN_OR_RETURN(caps_, vm_->ProbeCaps());
    caps_probed_ = true;
  }
  // MP_STATE first: reading it lets KVM process pending INIT/SIPI, which can
  // change CS:RIP; the registers read after it then agree with it.
  VMSNAP_ASSIGN_OR_RETURN(kvm_mp_state mp, vcpu.GetMpState());
  out.setMpState(mp.mp_state);

  VMSNAP_ASSIGN_OR_RETURN(kvm_regs r, vcpu.GetRegs());
  auto regs = out.initRegs();
  regs.setRax(r.rax); regs.setRbx(r.rbx); regs.setRcx(r.rcx); regs.setRdx(r.rdx);
  regs.setRsi(r.rsi); regs.setRdi(r.rdi); regs.setRsp(r.rsp); regs.setRbp(r.rbp);
  regs.setR8(r.r8);   regs.setR9(r.r9);   regs.setR10(r.r10); regs.setR11(r.r11);
  regs.setR12(r.r12); regs.setR13(r.r13); regs.setR14(r.r14); regs.setR15(r.r15);
  regs.setRip(r.rip); regs.setRflags(r.rflags);

  auto sregs = out.initSregs();
  if (caps_.sregs2) {
    // SREGS2 carries the PAE PDPTRs (valid only with PAE paging outside long
    // mode); it has no interrupt bitmap: a pending external interrupt is in
    // VCPU_EVENTS instead.
    VMSNAP_ASSIGN_OR_RETURN(kvm_sregs2 s, vcpu.GetSregs2());
    PutSregsCommon(s, sregs);
    if (s.flags & KVM_SREGS2_FLAGS_PDPTRS_VALID) {
      auto p = sregs.initPdptrs(4);
      for (unsigned i = 0; i < 4; ++i) p.set(i, s.pdptrs[i]);
    }
  } else {
    VMSNAP_ASSIGN_OR_RETURN(kvm_sregs s, vcpu.GetSregs());
    PutSregsCommon(s, sregs);
    auto bm = sregs.initInterruptBitmap(4);
    for (unsigned i = 0; i < 4; ++i) bm.set(i, s.interrupt_bitmap[i]);
  }

  if (caps_.xsave) {
    VMSNAP_ASSIGN_OR_RETURN(std::vector<uint8_t> xs, vcpu.GetXsave(caps_.xsave_size));
    out.setXsave(kj::arrayPtr(xs.data(), xs.size()));
  }
  if (caps_.xcrs) {
    VMSNAP_ASSIGN_OR_RETURN(kvm_xcrs x, vcpu.GetXcrs());
    if (x.nr_xcrs > KVM_MAX_XCRS) return Status::Kvm("KVM_GET_XCRS" + vcpu.where() + ": bad nr_xcrs");
    auto list = out.initXcrs(x.nr_xcrs);
    for (unsigned i = 0; i < x.nr_xcrs; ++i) {
      list[i].setXcr(x.xcrs[i].xcr);
      list[i].setValue(x.xcrs[i].value);
    }
  }
  if (caps_.debugregs) {
    VMSNAP_ASSIGN_OR_RETURN(kvm_debugregs d, vcpu.GetDebugRegs());
    auto b = out.initDebugregs();
    b.setDr0(d.db[0]); b.setDr1(d.db[1]); b.setDr2(d.db[2]); b.setDr3(d.db[3]);
    b.setDr6(d.dr6); b.setDr7(d.dr7); b.setFlags(d.flags);
  }
  VMSNAP_ASSIGN_OR_RETURN(kvm_lapic_state lapic, vcpu.GetLapic());
  out.setLapic(kj::arrayPtr(reinterpret_cast<const uint8_t*>(lapic.regs), sizeof lapic.regs));

  VMSNAP_ASSIGN_OR_RETURN(std::vector<uint32_t> indices, SavedMsrs());
  std::vector<kvm_msr_entry> entries(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) entries[i].index = indices[i];
  // A short count is an error naming the MSR (GetMsrsAll).
  VMSNAP_RETURN_IF_ERROR(vcpu.GetMsrsAll(entries));
  auto msrs = out.initMsrs(static_cast<unsigned>(entries.size()));
  for (size_t i = 0; i < entries.size(); ++i) {
    msrs[static_cast<unsigned>(i)].setIndex(entries[i].index);
    msrs[static_cast<unsigned>(i)].setValue(entries[i].data);
  }

  if (caps_.vcpu_events) {
    VMSNAP_ASSIGN_OR_RETURN(kvm_vcpu_events e, vcpu.GetVcpuEvents());
    auto ev = out.initEvents();
    auto ex = ev.initException();
    ex.setInjected(e.exception.injected);
    ex.setNr(e.exception.nr);
    ex.setHasErrorCode(e.exception.has_error_code);
    ex.setPending(e.exception.pending);
    ex.setErrorCode(e.exception.error_code);
    auto in = ev.initInterrupt();
    in.setInjected(e.interrupt.injected);
    in.setNr(e.interrupt.nr);
    in.setSoft(e.interrupt.soft);
    in.setShadow(e.interrupt.shadow);
    auto nmi = ev.initNmi();
    nmi.setInjected(e.nmi.injected);
    nmi.setPending(e.nmi.pending);
    nmi.setMasked(e.nmi.masked);
    ev.setSipiVector(e.sipi_vector);
    ev.setFlags(e.flags);
    auto smi = ev.initSmi();
    smi.setSmm(e.smi.smm);
    smi.setPending(e.smi.pending);
    smi.setSmmInsideNmi(e.smi.smm_inside_nmi);
    smi.setLatchedInit(e.smi.latched_init);
    ev.setTripleFault(e.triple_fault.pending);
    ev.setExceptionHasPayload(e.exception_has_payload);
    ev.setExceptionPayload(e.exception_payload);
  }

  VMSNAP_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> cpuid, vcpu.GetCpuid());
  auto cl = out.initCpuid(static_cast<unsigned>(cpuid.size()));
  for (size_t i = 0; i < cpuid.size(); ++i) {
    auto c = cl[static_cast<unsigned>(i)];
    c.setFunction(cpuid[i].function);
    c.setIndex(cpuid[i].index);
    c.setFlags(cpuid[i].flags);
    c.setEax(cpuid[i].eax);
    c.setEbx(cpuid[i].ebx);
    c.setEcx(cpuid[i].ecx);
    c.setEdx(cpuid[i].edx);
  }
  if (caps_.get_tsc_khz) {
    VMSNAP_ASSIGN_OR_RETURN(uint32_t khz, vcpu.GetTscKhz());
    out.setTscKhz(khz);
  }
  out.setKvmclockCtrl(caps_.kvmclock_ctrl);
  return Status::Ok();
}

Status X86Capturer::CaptureVm(sx::Vm::Builder out) {
  auto cfg = out.initConfig();
  cfg.setTssAddr(config_.tss_addr);
  cfg.setIdentityMapAddr(config_.identity_map_addr);
  cfg.setIrqchip(config_.irqchip);
  cfg.setPit(config_.pit);
  cfg.setPitFlags(config_.pit_flags);
  cfg.setDirtyRingBytes(config_.dirty_ring_bytes);
  auto caps = cfg.initEnabledCaps(static_cast<unsigned>(config_.enabled_caps.size()));
  for (size_t i = 0; i < config_.enabled_caps.size(); ++i) {
    const auto& c = config_.enabled_caps[i];
    auto b = caps[static_cast<unsigned>(i)];
    b.setCap(c.cap);
    b.setName(c.name);
    auto args = b.initArgs(static_cast<unsigned>(c.args.size()));
    for (size_t j = 0; j < c.args.size(); ++j) args.set(static_cast<unsigned>(j), c.args[j]);
  }

  if (config_.irqchip) {
    VMSNAP_ASSIGN_OR_RETURN(kvm_irqchip master, vm_->GetIrqchip(KVM_IRQCHIP_PIC_MASTER));
    PutPic(master.chip.pic, out.initPicMaster());
    VMSNAP_ASSIGN_OR_RETURN(kvm_irqchip slave, vm_->GetIrqchip(KVM_IRQCHIP_PIC_SLAVE));
    PutPic(slave.chip.pic, out.initPicSlave());
    VMSNAP_ASSIGN_OR_RETURN(kvm_irqchip io, vm_->GetIrqchip(KVM_IRQCHIP_IOAPIC));
    auto ioapic = out.initIoapic();
    ioapic.setBaseAddress(io.chip.ioapic.base_address);
    ioapic.setIoregsel(io.chip.ioapic.ioregsel);
    ioapic.setId(io.chip.ioapic.id);
    ioapic.setIrr(io.chip.ioapic.irr);
    auto rt = ioapic.initRedirtbl(KVM_IOAPIC_NUM_PINS);
    for (unsigned i = 0; i < KVM_IOAPIC_NUM_PINS; ++i) rt.set(i, io.chip.ioapic.redirtbl[i].bits);
  }
  if (config_.pit) {
    VMSNAP_ASSIGN_OR_RETURN(kvm_pit_state2 p, vm_->GetPit2());
    auto pit = out.initPit();
    pit.setFlags(p.flags);
    auto ch = pit.initChannels(3);
    for (unsigned i = 0; i < 3; ++i) {
      const kvm_pit_channel_state& c = p.channels[i];
      auto b = ch[i];
      b.setCount(c.count);
      b.setLatchedCount(c.latched_count);
      b.setCountLatched(c.count_latched);
      b.setStatusLatched(c.status_latched);
      b.setStatus(c.status);
      b.setReadState(c.read_state);
      b.setWriteState(c.write_state);
      b.setWriteLatch(c.write_latch);
      b.setRwMode(c.rw_mode);
      b.setMode(c.mode);
      b.setBcd(c.bcd);
      b.setGate(c.gate);
      b.setCountLoadTime(c.count_load_time);
    }
  }
  VMSNAP_ASSIGN_OR_RETURN(kvm_clock_data clk, vm_->GetClock());
  auto clock = out.initClock();
  clock.setClock(clk.clock);
  clock.setFlags(clk.flags);
  clock.setRealtime(clk.realtime);
  clock.setHostTsc(clk.host_tsc);
  return Status::Ok();
}

Status X86Capturer::Capture(schema::Manifest::Builder manifest) {
  manifest.setArch(schema::Arch::X8664);
  auto list = manifest.initVcpus(static_cast<unsigned>(vcpus_.size()));
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    auto v = list[static_cast<unsigned>(i)];
    v.setId(static_cast<uint32_t>(vcpus_[i]->index()));
    VMSNAP_RETURN_IF_ERROR(CaptureVcpu(*vcpus_[i], v.initX8664()));
  }
  return CaptureVm(manifest.initVm().initX8664());
}

}  // namespace vmsnap::capture::x86
