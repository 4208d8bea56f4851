// SPDX-License-Identifier: MIT
// x86 vCPU and VM state held in memory, in the kernel's structs, behind the
// same VcpuOps/VmOps interfaces the real ioctls implement. The C API writes a
// snapshot by running the capture code over these (instead of over KVM) and
// reads one by running the restore code into them, so the mapping between
// kernel structs and manifest fields exists once, in capture/ and restore/.
#pragma once

#include <linux/kvm.h>

#include <map>
#include <optional>
#include <vector>

#include "kvm/x86_64/x86.h"
#include "schemas/x86_64.capnp.h"

namespace vmsnap::capi {

class StateVcpuOps final : public kvm::x86::VcpuOps {
 public:
  explicit StateVcpuOps(int index) : index_(index) {}
  int index() const override { return index_; }

  std::optional<kvm_mp_state> mp;
  std::optional<kvm_regs> regs;
  std::optional<kvm_sregs> sregs;
  std::optional<kvm_sregs2> sregs2;
  std::optional<std::vector<uint8_t>> xsave;
  std::optional<kvm_xcrs> xcrs;
  std::optional<kvm_debugregs> debugregs;
  std::optional<kvm_lapic_state> lapic;
  std::map<uint32_t, uint64_t> msrs;
  bool msrs_set = false;
  std::optional<kvm_vcpu_events> events;
  std::optional<std::vector<kvm_cpuid_entry2>> cpuid;
  std::optional<uint32_t> tsc_khz;

  Result<kvm_mp_state> GetMpState() override { return Need(mp, "MP_STATE"); }
  Status SetMpState(const kvm_mp_state& s) override { mp = s; return Status::Ok(); }
  Result<kvm_regs> GetRegs() override { return Need(regs, "REGS"); }
  Status SetRegs(const kvm_regs& r) override { regs = r; return Status::Ok(); }
  Result<kvm_sregs> GetSregs() override { return Need(sregs, "SREGS"); }
  Status SetSregs(const kvm_sregs& s) override { sregs = s; return Status::Ok(); }
  Result<kvm_sregs2> GetSregs2() override { return Need(sregs2, "SREGS2"); }
  Status SetSregs2(const kvm_sregs2& s) override { sregs2 = s; return Status::Ok(); }
  Result<std::vector<uint8_t>> GetXsave(size_t) override { return Need(xsave, "XSAVE"); }
  Status SetXsave(std::span<const uint8_t> a) override {
    xsave = std::vector<uint8_t>(a.begin(), a.end());
    return Status::Ok();
  }
  Result<kvm_xcrs> GetXcrs() override { return Need(xcrs, "XCRS"); }
  Status SetXcrs(const kvm_xcrs& x) override { xcrs = x; return Status::Ok(); }
  Result<kvm_debugregs> GetDebugRegs() override { return Need(debugregs, "DEBUGREGS"); }
  Status SetDebugRegs(const kvm_debugregs& d) override { debugregs = d; return Status::Ok(); }
  Result<kvm_lapic_state> GetLapic() override { return Need(lapic, "LAPIC"); }
  Status SetLapic(const kvm_lapic_state& l) override { lapic = l; return Status::Ok(); }
  // As KVM does: the entries up to the first unknown MSR.
  Result<size_t> GetMsrs(std::vector<kvm_msr_entry>& entries) override;
  Result<size_t> SetMsrs(std::span<const kvm_msr_entry> entries) override;
  Result<kvm_vcpu_events> GetVcpuEvents() override { return Need(events, "EVENTS"); }
  Status SetVcpuEvents(const kvm_vcpu_events& e) override { events = e; return Status::Ok(); }
  Result<std::vector<kvm_cpuid_entry2>> GetCpuid() override { return Need(cpuid, "CPUID"); }
  Status SetCpuid(std::span<const kvm_cpuid_entry2> e) override {
    cpuid = std::vector<kvm_cpuid_entry2>(e.begin(), e.end());
    return Status::Ok();
  }
  Result<uint32_t> GetTscKhz() override { return Need(tsc_khz, "TSC_KHZ"); }
  Status SetTscKhz(uint32_t khz) override { tsc_khz = khz; return Status::Ok(); }
  Result<bool> KvmclockCtrl() override { return false; }

 private:
  template <typename T>
  Result<T> Need(const std::optional<T>& v, const char* name) const {
    if (!v) {
      return Status::NotFound("vCPU " + std::to_string(index_) + " has no " + name +
                              " state (vmsnap_writer_set_vcpu_state VMSNAP_X86_" + name + ")");
    }
    return *v;
  }
  int index_;
};

class StateVmOps final : public kvm::x86::VmOps {
 public:
  // `vcpu0` answers which optional vCPU state exists (the capabilities a
  // capture consults); may be null when only reading.
  explicit StateVmOps(StateVcpuOps* vcpu0 = nullptr) : vcpu0_(vcpu0) {}

  std::map<uint32_t, kvm_irqchip> irqchips;
  std::optional<kvm_pit_state2> pit;
  std::optional<kvm_clock_data> clock;
  kvm::x86::VmConfig config;
  bool exception_payload = false;

  Result<int> CheckExtension(long cap) override;
  Result<kvm_irqchip> GetIrqchip(uint32_t chip_id) override;
  Status SetIrqchip(const kvm_irqchip& chip) override { irqchips[chip.chip_id] = chip; return Status::Ok(); }
  Result<kvm_pit_state2> GetPit2() override;
  Status SetPit2(const kvm_pit_state2& p) override { pit = p; return Status::Ok(); }
  Result<kvm_clock_data> GetClock() override;
  Status SetClock(const kvm_clock_data& c) override { clock = c; return Status::Ok(); }
  Status SetTssAddr(uint64_t a) override { config.tss_addr = a; return Status::Ok(); }
  Status SetIdentityMapAddr(uint64_t a) override { config.identity_map_addr = a; return Status::Ok(); }
  Status CreateIrqchip() override { config.irqchip = true; return Status::Ok(); }
  Status CreatePit2(uint32_t flags) override {
    config.pit = true;
    config.pit_flags = flags;
    return Status::Ok();
  }
  Status EnableCap(uint32_t, std::span<const uint64_t>) override { return Status::Ok(); }
  Result<std::vector<kvm_cpuid_entry2>> SupportedCpuid() override;
  Result<std::vector<uint32_t>> MsrIndexList() override;

 private:
  StateVcpuOps* vcpu0_;
};

// The state a restore would give KVM for this vCPU of a manifest: the one
// mapping from manifest fields to kernel structs, run into memory.
// `sregs2` picks which of the two sregs layouts is filled.
Result<StateVcpuOps> X86VcpuState(schema::x86::Vcpu::Reader v, uint32_t index, bool sregs2);

}  // namespace vmsnap::capi
