// SPDX-License-Identifier: MIT
// x86-64 restore: see x86_restore.h. Each ordering constraint is written next
// to the step that it affects, and in docs/state-coverage.md.
#include "restore/x86_64/x86_restore.h"

#include <cstdio>
#include <cstring>

#include "base/hex.h"
#include "state/x86_64/x86_fields.h"

namespace vmsnap::restore::x86 {
namespace sx = schema::x86;
namespace kx = kvm::x86;
using state::x86::Decode;

namespace {

struct Feature {
  uint32_t leaf;
  uint32_t subleaf;
  char reg;  // 'a', 'b', 'c', 'd'
  uint8_t bit;
  const char* name;
};

// Feature bits a guest may rely on once it has seen them. Bits that KVM
// computes at run time from guest state (OSXSAVE, OSPKE, APIC, HYPERVISOR)
// are left out: they are not host features.
constexpr Feature kFeatures[] = {
    {1, 0, 'd', 0, "fpu"}, {1, 0, 'd', 4, "tsc"}, {1, 0, 'd', 5, "msr"}, {1, 0, 'd', 6, "pae"},
    {1, 0, 'd', 8, "cx8"}, {1, 0, 'd', 11, "sep"}, {1, 0, 'd', 12, "mtrr"}, {1, 0, 'd', 13, "pge"},
    {1, 0, 'd', 15, "cmov"}, {1, 0, 'd', 16, "pat"}, {1, 0, 'd', 19, "clflush"}, {1, 0, 'd', 23, "mmx"},
    {1, 0, 'd', 24, "fxsr"}, {1, 0, 'd', 25, "sse"}, {1, 0, 'd', 26, "sse2"},
    {1, 0, 'c', 0, "sse3"}, {1, 0, 'c', 1, "pclmulqdq"}, {1, 0, 'c', 5, "vmx"}, {1, 0, 'c', 9, "ssse3"},
    {1, 0, 'c', 12, "fma"}, {1, 0, 'c', 13, "cx16"}, {1, 0, 'c', 17, "pcid"}, {1, 0, 'c', 19, "sse4_1"},
    {1, 0, 'c', 20, "sse4_2"}, {1, 0, 'c', 21, "x2apic"}, {1, 0, 'c', 22, "movbe"}, {1, 0, 'c', 23, "popcnt"},
    {1, 0, 'c', 24, "tsc_deadline_timer"}, {1, 0, 'c', 25, "aes"}, {1, 0, 'c', 26, "xsave"},
    {1, 0, 'c', 28, "avx"}, {1, 0, 'c', 29, "f16c"}, {1, 0, 'c', 30, "rdrand"},
    {7, 0, 'b', 0, "fsgsbase"}, {7, 0, 'b', 1, "tsc_adjust"}, {7, 0, 'b', 3, "bmi1"}, {7, 0, 'b', 4, "hle"},
    {7, 0, 'b', 5, "avx2"}, {7, 0, 'b', 7, "smep"}, {7, 0, 'b', 8, "bmi2"}, {7, 0, 'b', 9, "erms"},
    {7, 0, 'b', 10, "invpcid"}, {7, 0, 'b', 11, "rtm"}, {7, 0, 'b', 16, "avx512f"}, {7, 0, 'b', 17, "avx512dq"},
    {7, 0, 'b', 18, "rdseed"}, {7, 0, 'b', 19, "adx"}, {7, 0, 'b', 20, "smap"}, {7, 0, 'b', 21, "avx512ifma"},
    {7, 0, 'b', 23, "clflushopt"}, {7, 0, 'b', 24, "clwb"}, {7, 0, 'b', 28, "avx512cd"}, {7, 0, 'b', 29, "sha_ni"},
    {7, 0, 'b', 30, "avx512bw"}, {7, 0, 'b', 31, "avx512vl"},
    {7, 0, 'c', 1, "avx512vbmi"}, {7, 0, 'c', 2, "umip"}, {7, 0, 'c', 3, "pku"}, {7, 0, 'c', 5, "waitpkg"},
    {7, 0, 'c', 6, "avx512_vbmi2"}, {7, 0, 'c', 8, "gfni"}, {7, 0, 'c', 9, "vaes"}, {7, 0, 'c', 10, "vpclmulqdq"},
    {7, 0, 'c', 11, "avx512_vnni"}, {7, 0, 'c', 12, "avx512_bitalg"}, {7, 0, 'c', 14, "avx512_vpopcntdq"},
    {7, 0, 'c', 16, "la57"}, {7, 0, 'c', 22, "rdpid"}, {7, 0, 'c', 27, "movdiri"}, {7, 0, 'c', 28, "movdir64b"},
    {7, 0, 'd', 4, "fsrm"}, {7, 0, 'd', 10, "md_clear"}, {7, 0, 'd', 14, "serialize"}, {7, 0, 'd', 23, "avx512_fp16"},
    {7, 0, 'd', 24, "amx_tile"}, {7, 0, 'd', 26, "spec_ctrl"}, {7, 0, 'd', 27, "stibp"},
    {7, 0, 'd', 29, "arch_capabilities"}, {7, 0, 'd', 31, "ssbd"},
    {0xd, 0, 'a', 2, "xsave_avx_state"}, {0xd, 0, 'a', 5, "xsave_avx512_opmask"},
    {0xd, 0, 'a', 6, "xsave_zmm_hi256"}, {0xd, 0, 'a', 7, "xsave_hi16_zmm"}, {0xd, 0, 'a', 9, "xsave_pkru"},
    {0xd, 1, 'a', 0, "xsaveopt"}, {0xd, 1, 'a', 1, "xsavec"}, {0xd, 1, 'a', 2, "xgetbv1"}, {0xd, 1, 'a', 3, "xsaves"},
    {0x80000001, 0, 'c', 0, "lahf_lm"}, {0x80000001, 0, 'c', 2, "svm"}, {0x80000001, 0, 'c', 5, "abm"},
    {0x80000001, 0, 'c', 6, "sse4a"}, {0x80000001, 0, 'c', 8, "3dnowprefetch"}, {0x80000001, 0, 'c', 16, "fma4"},
    {0x80000001, 0, 'd', 11, "syscall"}, {0x80000001, 0, 'd', 20, "nx"}, {0x80000001, 0, 'd', 26, "pdpe1gb"},
    {0x80000001, 0, 'd', 27, "rdtscp"}, {0x80000001, 0, 'd', 29, "lm"},
};

uint32_t Reg(const kvm_cpuid_entry2& e, char r) {
  switch (r) {
    case 'a': return e.eax;
    case 'b': return e.ebx;
    case 'c': return e.ecx;
    default: return e.edx;
  }
}

const kvm_cpuid_entry2* FindLeaf(const std::vector<kvm_cpuid_entry2>& v, uint32_t leaf, uint32_t sub) {
  for (const auto& e : v) {
    if (e.function != leaf) continue;
    if ((e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) && e.index != sub) continue;
    return &e;
  }
  return nullptr;
}

}  // namespace

Status ApplyVmConfig(kx::VmOps& vm, const kx::VmConfig& config) {
  // Capabilities first: some (split irqchip, the dirty ring, X2APIC_API)
  // change how the irqchip and vCPUs are created, and KVM refuses them once
  // vCPUs exist.
  for (const auto& cap : config.enabled_caps) {
    VMSNAP_RETURN_IF_ERROR(vm.EnableCap(cap.cap, cap.args).Context("replaying " + cap.name));
  }
  // The TSS and identity-map pages are used by KVM on Intel hosts to run
  // real-mode code; KVM_SET_IDENTITY_MAP_ADDR must precede KVM_CREATE_VCPU.
  if (config.tss_addr) VMSNAP_RETURN_IF_ERROR(vm.SetTssAddr(config.tss_addr));
  if (config.identity_map_addr) VMSNAP_RETURN_IF_ERROR(vm.SetIdentityMapAddr(config.identity_map_addr));
  // The in-kernel irqchip must exist before vCPUs (each vCPU gets its LAPIC
  // at creation), and the PIT needs the irqchip to deliver its interrupt.
  if (config.irqchip) VMSNAP_RETURN_IF_ERROR(vm.CreateIrqchip());
  if (config.pit) VMSNAP_RETURN_IF_ERROR(vm.CreatePit2(config.pit_flags));
  return Status::Ok();
}

kx::VmConfig WithoutDirtyLogging(kx::VmConfig c) {
  c.dirty_ring_bytes = 0;
  std::erase_if(c.enabled_caps, [](const auto& cap) {
    return cap.cap == KVM_CAP_DIRTY_LOG_RING || cap.cap == KVM_CAP_DIRTY_LOG_RING_ACQ_REL ||
           cap.cap == KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
  });
  return c;
}

Status CheckCpuidSupported(capnp::List<sx::CpuidEntry>::Reader wanted_list,
                           const std::vector<kvm_cpuid_entry2>& supported) {
  std::vector<kvm_cpuid_entry2> wanted = state::x86::DecodeCpuid(wanted_list);
  std::string missing;
  for (const Feature& f : kFeatures) {
    const kvm_cpuid_entry2* w = FindLeaf(wanted, f.leaf, f.subleaf);
    if (!w || !(Reg(*w, f.reg) & (1u << f.bit))) continue;
    const kvm_cpuid_entry2* s = FindLeaf(supported, f.leaf, f.subleaf);
    if (s && (Reg(*s, f.reg) & (1u << f.bit))) continue;
    char where[64];
    std::snprintf(where, sizeof where, "CPUID.%02XH.%u:E%cX[%u]", f.leaf, f.subleaf, f.reg - 'a' + 'A', f.bit);
    if (!missing.empty()) missing += ", ";
    missing += std::string(f.name) + " (" + where + ")";
  }
  if (!missing.empty()) {
    return Status::Unsupported("the snapshot's CPUID needs features this host's KVM lacks: " + missing);
  }
  return Status::Ok();
}

Status CheckHost(kx::VmOps& vm, schema::Manifest::Reader m) {
  if (m.getArch() != schema::Arch::X8664) return Status::WrongArch("snapshot is not for x86_64 (wrong architecture)");
  if (!m.getVm().isX8664()) return Status::Corruption("x86_64 snapshot without x86_64 VM state");
  if (m.getVcpus().size() == 0) return Status::Corruption("snapshot has no vCPUs");
  VMSNAP_ASSIGN_OR_RETURN(kx::HostCaps caps, vm.ProbeCaps());
  for (auto v : m.getVcpus()) {
    if (!v.isX8664()) return Status::Corruption("vCPU " + std::to_string(v.getId()) + " has no x86_64 state");
    auto x = v.getX8664();
    if (x.hasXsave() && x.getXsave().size() > caps.xsave_size) {
      return Status::Unsupported("vCPU " + std::to_string(v.getId()) + ": XSAVE area of " +
                                 std::to_string(x.getXsave().size()) + " bytes is larger than this host's " +
                                 std::to_string(caps.xsave_size));
    }
    if (x.getLapic().size() != sizeof(kvm_lapic_state)) {
      return Status::Corruption("vCPU " + std::to_string(v.getId()) + ": LAPIC image is " +
                                std::to_string(x.getLapic().size()) + " bytes, expected 1024");
    }
  }
  return Status::Ok();
}

Result<std::vector<kvm_cpuid_entry2>> HostCpuid(kx::VmOps& vm, kx::VcpuOps& fresh_vcpu) {
  VMSNAP_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> supported, vm.SupportedCpuid());
  VMSNAP_RETURN_IF_ERROR(fresh_vcpu.SetCpuid(supported));
  VMSNAP_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> presented, fresh_vcpu.GetCpuid());
  std::vector<kvm_cpuid_entry2> merged = supported;
  for (const auto& p : presented) {
    bool found = false;
    for (auto& e : merged) {
      if (e.function == p.function && e.index == p.index) {
        e.eax |= p.eax;
        e.ebx |= p.ebx;
        e.ecx |= p.ecx;
        e.edx |= p.edx;
        found = true;
      }
    }
    if (!found) merged.push_back(p);
  }
  return merged;
}

Status CheckCpuid(kx::VmOps& vm, kx::VcpuOps& fresh_vcpu, schema::Manifest::Reader m) {
  VMSNAP_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> host, HostCpuid(vm, fresh_vcpu));
  return CheckCpuidAgainst(host, m);
}

Status CheckCpuidAgainst(const std::vector<kvm_cpuid_entry2>& host, schema::Manifest::Reader m) {
  for (auto v : m.getVcpus()) {
    if (!v.isX8664()) return Status::Corruption("vCPU " + std::to_string(v.getId()) + " has no x86_64 state");
    VMSNAP_RETURN_IF_ERROR(CheckCpuidSupported(v.getX8664().getCpuid(), host)
                               .Context("vCPU " + std::to_string(v.getId())));
  }
  return Status::Ok();
}

Status RestoreVcpu(kx::VcpuOps& vcpu, sx::Vcpu::Reader s, const kx::HostCaps& caps) {
  VMSNAP_RETURN_IF_ERROR(RestoreVcpuUntimed(vcpu, s, caps));
  return RestoreVcpuTimed(vcpu, s, caps);
}

Status RestoreVcpuUntimed(kx::VcpuOps& vcpu, sx::Vcpu::Reader s, const kx::HostCaps& caps) {
  // Step 1, CPUID2: it decides which MSRs, XSAVE components and CR4 bits the
  // vCPU accepts, so everything after it depends on it.
  std::vector<kvm_cpuid_entry2> cpuid = state::x86::DecodeCpuid(s.getCpuid());
  VMSNAP_RETURN_IF_ERROR(vcpu.SetCpuid(cpuid));

  // TSC frequency: without TSC scaling a vCPU runs at the host's rate, so a
  // snapshot taken at another rate cannot be honoured.
  if (s.getTscKhz() != 0 && caps.get_tsc_khz) {
    VMSNAP_ASSIGN_OR_RETURN(uint32_t host_khz, vcpu.GetTscKhz());
    if (host_khz != s.getTscKhz()) {
      if (!caps.tsc_control) {
        return Status::Unsupported("vCPU " + std::to_string(vcpu.index()) + ": snapshot TSC runs at " +
                                   std::to_string(s.getTscKhz()) + " kHz, this host at " +
                                   std::to_string(host_khz) + " kHz and KVM cannot scale it");
      }
      VMSNAP_RETURN_IF_ERROR(vcpu.SetTscKhz(s.getTscKhz()));
    }
  }

  // Step 2, MP_STATE: before the registers, as Firecracker does; setting
  // it after REGS could let KVM reprocess INIT/SIPI over restored CS:RIP.
  kvm_mp_state mp{};
  mp.mp_state = s.getMpState();
  VMSNAP_RETURN_IF_ERROR(vcpu.SetMpState(mp));

  // Step 3, REGS: KVM_SET_REGS clears pending exceptions, so vCPU events
  // (which carry them) come later.
  kvm_regs regs;
  Decode(s.getRegs(), regs);
  VMSNAP_RETURN_IF_ERROR(vcpu.SetRegs(regs));

  // Step 4, SREGS(2): EFER, CR0/3/4 and the APIC base MSR; the LAPIC and
  // MSRs below are only accepted once these modes are in place.
  if (caps.sregs2) {
    kvm_sregs2 s2;
    Decode(s.getSregs(), s2);
    VMSNAP_RETURN_IF_ERROR(vcpu.SetSregs2(s2));
  } else {
    kvm_sregs s1;
    Decode(s.getSregs(), s1);
    VMSNAP_RETURN_IF_ERROR(vcpu.SetSregs(s1));
  }

  // Step 5, XSAVE then XCRS: the XSAVE image holds the FPU/SSE/AVX state;
  // XCR0 is set after it, as QEMU and Firecracker do.
  if (s.hasXsave() && caps.xsave) {
    auto blob = s.getXsave();
    std::vector<uint8_t> area(std::max<size_t>(caps.xsave_size, blob.size()), 0);
    std::memcpy(area.data(), blob.begin(), blob.size());
    VMSNAP_RETURN_IF_ERROR(vcpu.SetXsave(area));
  }
  if (caps.xcrs && s.getXcrs().size() > 0) {
    kvm_xcrs x;
    VMSNAP_RETURN_IF_ERROR(Decode(s, x));
    VMSNAP_RETURN_IF_ERROR(vcpu.SetXcrs(x));
  }

  // Step 6, DEBUGREGS: DR0-3, DR6, DR7. Independent of the rest; before the
  // events so a pending #DB sees its DR6.
  if (caps.debugregs && s.hasDebugregs()) {
    kvm_debugregs dr;
    Decode(s.getDebugregs(), dr);
    VMSNAP_RETURN_IF_ERROR(vcpu.SetDebugRegs(dr));
  }
  return Status::Ok();
}

Status RestoreVcpuTimed(kx::VcpuOps& vcpu, sx::Vcpu::Reader s, const kx::HostCaps& caps) {
  // Step 7, LAPIC: after SREGS (SET_SREGS restores the APIC base MSR, which
  // decides xAPIC/x2APIC mode and the APIC ID layout) and before the MSRs
  // (TSC_DEADLINE is only accepted with the LVT timer in deadline mode).
  {
    kvm_lapic_state l;
    VMSNAP_RETURN_IF_ERROR(Decode(s, l));
    VMSNAP_RETURN_IF_ERROR(vcpu.SetLapic(l));
  }

  // Step 8, MSRs: all but TSC_DEADLINE in one call, then TSC_DEADLINE alone:
  // the deadline is an absolute TSC value and KVM arms the timer against the
  // TSC (MSR 0x10) that the first call restores.
  {
    std::vector<kvm_msr_entry> rest;
    std::vector<kvm_msr_entry> deadline;
    for (const kvm_msr_entry& e : state::x86::DecodeMsrs(s)) {
      (e.index == kx::kMsrTscDeadline ? deadline : rest).push_back(e);
    }
    VMSNAP_RETURN_IF_ERROR(vcpu.SetMsrsAll(rest));
    if (!deadline.empty()) VMSNAP_RETURN_IF_ERROR(vcpu.SetMsrsAll(deadline));
  }

  // Step 9, VCPU_EVENTS last among the vCPU state: REGS/SREGS above would
  // clear or disturb pending exceptions and interrupts. The valid-flags tell
  // KVM which parts to take: we pass back the flags KVM gave us on capture
  // (NMI_PENDING, SHADOW, SMM, PAYLOAD when exception payloads are enabled,
  // TRIPLE_FAULT when that cap is on, both replayed with the VM config) and
  // add SIPI_VECTOR, which KVM_GET_VCPU_EVENTS fills but never flags.
  if (caps.vcpu_events && s.hasEvents()) {
    kvm_vcpu_events e;
    Decode(s.getEvents(), e);
    uint32_t flags = e.flags | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    if (!caps.exception_payload) flags &= ~KVM_VCPUEVENT_VALID_PAYLOAD;
    if (!caps.triple_fault_event) flags &= ~KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
    e.flags = flags;
    VMSNAP_RETURN_IF_ERROR(vcpu.SetVcpuEvents(e));
  }
  return Status::Ok();
}

Status RestoreVm(kx::VmOps& vm, sx::Vm::Reader s) {
  auto cfg = s.getConfig();
  // PIT2 first: its channel 0 output feeds IRQ0 of the PIC/IOAPIC restored
  // below, so their IRR reflects a PIT that is already in place.
  if (cfg.getPit() && s.hasPit()) {
    kvm_pit_state2 k;
    VMSNAP_RETURN_IF_ERROR(Decode(s.getPit(), k));
    VMSNAP_RETURN_IF_ERROR(vm.SetPit2(k));
  }
  // CLOCK: kvmclock resumes at the saved value (flags 0, not
  // KVM_CLOCK_REALTIME): the guest's clock does not jump over the time the
  // snapshot spent on disk.
  if (s.hasClock()) {
    kvm_clock_data c;
    Decode(s.getClock(), c);
    c.flags = 0;
    VMSNAP_RETURN_IF_ERROR(vm.SetClock(c));
  }
  // IRQCHIP last: after the LAPICs exist with their state, so interrupts the
  // PIC or IOAPIC deliver on being restored land in restored LAPICs.
  if (cfg.getIrqchip()) {
    kvm_irqchip master{};
    master.chip_id = KVM_IRQCHIP_PIC_MASTER;
    Decode(s.getPicMaster(), master.chip.pic);
    VMSNAP_RETURN_IF_ERROR(vm.SetIrqchip(master));
    kvm_irqchip slave{};
    slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    Decode(s.getPicSlave(), slave.chip.pic);
    VMSNAP_RETURN_IF_ERROR(vm.SetIrqchip(slave));
    kvm_irqchip io{};
    io.chip_id = KVM_IRQCHIP_IOAPIC;
    VMSNAP_RETURN_IF_ERROR(Decode(s.getIoapic(), io.chip.ioapic));
    VMSNAP_RETURN_IF_ERROR(vm.SetIrqchip(io));
  }
  return Status::Ok();
}

namespace {

// One half of every vCPU's state (StatePart), vCPU by vCPU.
Status RestoreVcpus(const std::vector<kx::VcpuOps*>& vcpus, schema::Manifest::Reader m, const kx::HostCaps& caps,
                    StatePart part) {
  auto list = m.getVcpus();
  if (list.size() != vcpus.size()) {
    return Status::InvalidArgument("snapshot has " + std::to_string(list.size()) + " vCPUs, VM has " +
                                   std::to_string(vcpus.size()));
  }
  for (unsigned i = 0; i < list.size(); ++i) {
    if (!list[i].isX8664()) return Status::Corruption("vCPU " + std::to_string(i) + " has no x86_64 state");
    Status s;
    switch (part) {
      case StatePart::kAll: s = RestoreVcpu(*vcpus[i], list[i].getX8664(), caps); break;
      case StatePart::kUntimed: s = RestoreVcpuUntimed(*vcpus[i], list[i].getX8664(), caps); break;
      case StatePart::kTimed: s = RestoreVcpuTimed(*vcpus[i], list[i].getX8664(), caps); break;
    }
    VMSNAP_RETURN_IF_ERROR(s.Context("restoring vCPU " + std::to_string(i)));
  }
  return Status::Ok();
}

}  // namespace

Status RestoreState(kx::VmOps& vm, const std::vector<kx::VcpuOps*>& vcpus, schema::Manifest::Reader m,
                    StatePart part) {
  VMSNAP_ASSIGN_OR_RETURN(kx::HostCaps caps, vm.ProbeCaps());
  VMSNAP_RETURN_IF_ERROR(RestoreVcpus(vcpus, m, caps, part));
  if (part == StatePart::kUntimed) return Status::Ok();
  auto list = m.getVcpus();
  if (!m.getVm().isX8664()) return Status::Corruption("snapshot has no x86_64 VM state");
  VMSNAP_RETURN_IF_ERROR(RestoreVm(vm, m.getVm().getX8664()).Context("restoring VM state"));
  // Step 10, KVMCLOCK_CTRL: once everything is in place, tell a guest that
  // uses kvmclock it was paused, so its soft-lockup watchdog does not fire.
  // EINVAL (the guest never enabled kvmclock) is not an error.
  if (caps.kvmclock_ctrl) {
    for (unsigned i = 0; i < list.size(); ++i) {
      if (!list[i].getX8664().getKvmclockCtrl()) continue;
      VMSNAP_RETURN_IF_ERROR(vcpus[i]->KvmclockCtrl().status());
    }
  }
  return Status::Ok();
}

}  // namespace vmsnap::restore::x86
