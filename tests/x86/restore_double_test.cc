// SPDX-License-Identifier: MIT
// Restore and capture against a recording, fault-injecting double of the kvm
// interface: the documented restore order, TSC_DEADLINE written last and
// alone, and a rejected MSR reported by name.
#include <capnp/message.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "capture/x86_64/x86_capture.h"
#include "kvm/x86_64/x86.h"
#include "restore/x86_64/x86_restore.h"

namespace vmsnap {
namespace {

namespace kx = kvm::x86;

class FakeVcpu : public kx::VcpuOps {
 public:
  explicit FakeVcpu(int index) : index_(index) {}
  int index() const override { return index_; }
  std::vector<std::string> calls;
  std::vector<std::vector<kvm_msr_entry>> msr_sets;
  uint32_t reject_msr = 0;  // SET_MSRS stops at this index
  uint32_t unreadable_msr = 0;

  Result<kvm_mp_state> GetMpState() override { calls.push_back("GET_MP_STATE"); return kvm_mp_state{}; }
  Status SetMpState(const kvm_mp_state&) override { calls.push_back("MP_STATE"); return Status::Ok(); }
  Result<kvm_regs> GetRegs() override { calls.push_back("GET_REGS"); return kvm_regs{}; }
  Status SetRegs(const kvm_regs&) override { calls.push_back("REGS"); return Status::Ok(); }
  Result<kvm_sregs> GetSregs() override { return kvm_sregs{}; }
  Status SetSregs(const kvm_sregs&) override { calls.push_back("SREGS"); return Status::Ok(); }
  Result<kvm_sregs2> GetSregs2() override { calls.push_back("GET_SREGS2"); return kvm_sregs2{}; }
  Status SetSregs2(const kvm_sregs2&) override { calls.push_back("SREGS2"); return Status::Ok(); }
  Result<std::vector<uint8_t>> GetXsave(size_t size) override { return std::vector<uint8_t>(size, 0); }
  Status SetXsave(std::span<const uint8_t>) override { calls.push_back("XSAVE"); return Status::Ok(); }
  Result<kvm_xcrs> GetXcrs() override { return kvm_xcrs{}; }
  Status SetXcrs(const kvm_xcrs&) override { calls.push_back("XCRS"); return Status::Ok(); }
  Result<kvm_debugregs> GetDebugRegs() override { return kvm_debugregs{}; }
  Status SetDebugRegs(const kvm_debugregs&) override { calls.push_back("DEBUGREGS"); return Status::Ok(); }
  Result<kvm_lapic_state> GetLapic() override { return kvm_lapic_state{}; }
  Status SetLapic(const kvm_lapic_state&) override { calls.push_back("LAPIC"); return Status::Ok(); }
  Result<size_t> GetMsrs(std::vector<kvm_msr_entry>& e) override {
    for (size_t i = 0; i < e.size(); ++i) {
      if (e[i].index == unreadable_msr) return i;
      e[i].data = e[i].index * 2;
    }
    return e.size();
  }
  Result<size_t> SetMsrs(std::span<const kvm_msr_entry> e) override {
    calls.push_back("MSRS");
    msr_sets.emplace_back(e.begin(), e.end());
    for (size_t i = 0; i < e.size(); ++i) {
      if (e[i].index == reject_msr) return i;  // the kernel's short count
    }
    return e.size();
  }
  Result<kvm_vcpu_events> GetVcpuEvents() override { return kvm_vcpu_events{}; }
  Status SetVcpuEvents(const kvm_vcpu_events& e) override {
    calls.push_back("VCPU_EVENTS");
    events_flags = e.flags;
    return Status::Ok();
  }
  Result<std::vector<kvm_cpuid_entry2>> GetCpuid() override { return std::vector<kvm_cpuid_entry2>{}; }
  Status SetCpuid(std::span<const kvm_cpuid_entry2>) override { calls.push_back("CPUID2"); return Status::Ok(); }
  Result<uint32_t> GetTscKhz() override { return 2000000u; }
  Status SetTscKhz(uint32_t) override { calls.push_back("TSC_KHZ"); return Status::Ok(); }
  Result<bool> KvmclockCtrl() override { calls.push_back("KVMCLOCK_CTRL"); return true; }
  uint32_t events_flags = 0;

 private:
  int index_;
};

kx::HostCaps AllCaps() {
  kx::HostCaps c;
  c.sregs2 = c.xsave = c.xcrs = c.debugregs = c.vcpu_events = c.exception_payload = true;
  c.kvmclock_ctrl = c.get_tsc_khz = true;
  c.xsave_size = 4096;
  return c;
}

// A vCPU state with MSRs TSC, SYSENTER_CS, TSC_DEADLINE (in the middle), TSC_AUX.
void FillVcpu(schema::x86::Vcpu::Builder v) {
  v.setMpState(KVM_MP_STATE_HALTED);
  v.initRegs().setRip(0x100000);
  v.initSregs().setEfer(0x500);
  v.setXsave(kj::heapArray<uint8_t>(4096).asPtr());
  auto x = v.initXcrs(1);
  x[0].setXcr(0);
  x[0].setValue(3);
  v.initDebugregs().setDr7(0x455);
  v.setLapic(kj::heapArray<uint8_t>(1024).asPtr());
  auto m = v.initMsrs(4);
  m[0].setIndex(0x10);       m[0].setValue(1000);
  m[1].setIndex(0x174);      m[1].setValue(8);
  m[2].setIndex(0x6e0);      m[2].setValue(5000);
  m[3].setIndex(0xc0000103); m[3].setValue(0x1234);
  auto ev = v.initEvents();
  ev.setFlags(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_PAYLOAD);
  v.initCpuid(1)[0].setFunction(0);
  v.setTscKhz(2000000);
}

TEST(RestoreOrder, FollowsTheDocumentedSteps) {
  capnp::MallocMessageBuilder msg;
  auto v = msg.initRoot<schema::x86::Vcpu>();
  FillVcpu(v);
  FakeVcpu fake(0);
  ASSERT_TRUE(restore::x86::RestoreVcpu(fake, v.asReader(), AllCaps()).ok());
  std::vector<std::string> want = {"CPUID2", "MP_STATE", "REGS", "SREGS2", "XSAVE", "XCRS",
                                   "DEBUGREGS", "LAPIC", "MSRS", "MSRS", "VCPU_EVENTS"};
  EXPECT_EQ(fake.calls, want);
  // TSC_DEADLINE goes last and alone, after the TSC it is relative to.
  ASSERT_EQ(fake.msr_sets.size(), 2u);
  ASSERT_EQ(fake.msr_sets[1].size(), 1u);
  EXPECT_EQ(fake.msr_sets[1][0].index, 0x6e0u);
  EXPECT_EQ(fake.msr_sets[1][0].data, 5000u);
  for (const auto& e : fake.msr_sets[0]) EXPECT_NE(e.index, 0x6e0u);
  EXPECT_EQ(fake.msr_sets[0].size(), 3u);
  // The valid-flags KVM gave are passed back, plus the SIPI vector.
  EXPECT_EQ(fake.events_flags, KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW |
                                   KVM_VCPUEVENT_VALID_PAYLOAD | KVM_VCPUEVENT_VALID_SIPI_VECTOR);
}

TEST(RestoreFaults, RejectedMsrIsNamed) {
  capnp::MallocMessageBuilder msg;
  auto v = msg.initRoot<schema::x86::Vcpu>();
  FillVcpu(v);
  FakeVcpu fake(1);
  fake.reject_msr = 0xc0000103;
  Status s = restore::x86::RestoreVcpu(fake, v.asReader(), AllCaps());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kKvm);
  EXPECT_NE(s.message().find("KVM_SET_MSRS on vCPU 1"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("entry 2 (MSR 0xc0000103) rejected"), std::string::npos) << s.message();
  // Nothing after the failing step ran.
  EXPECT_EQ(fake.calls.back(), "MSRS");
}

TEST(RestoreFaults, TscFrequencyMismatchWithoutScalingIsRefused) {
  capnp::MallocMessageBuilder msg;
  auto v = msg.initRoot<schema::x86::Vcpu>();
  FillVcpu(v);
  v.setTscKhz(1000000);
  FakeVcpu fake(0);
  Status s = restore::x86::RestoreVcpu(fake, v.asReader(), AllCaps());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("1000000 kHz"), std::string::npos) << s.message();
}

TEST(CpuidCheck, NamesMissingFeatures) {
  capnp::MallocMessageBuilder msg;
  auto list = msg.initRoot<schema::x86::Vcpu>().initCpuid(2);
  list[0].setFunction(1);
  list[0].setEcx((1u << 28) | (1u << 0));  // avx, sse3
  list[1].setFunction(7);
  list[1].setFlags(KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
  list[1].setEbx(1u << 16);  // avx512f
  std::vector<kvm_cpuid_entry2> host(1);
  host[0].function = 1;
  host[0].ecx = 1u << 0;  // sse3 only
  Status s = restore::x86::CheckCpuidSupported(list.asReader(), host);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kUnsupported);
  EXPECT_NE(s.message().find("avx (CPUID.01H.0:ECX[28])"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("avx512f (CPUID.07H.0:EBX[16])"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find("sse3"), std::string::npos) << s.message();
  host[0].ecx |= 1u << 28;
  std::vector<kvm_cpuid_entry2> with7 = host;
  kvm_cpuid_entry2 l7{};
  l7.function = 7;
  l7.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
  l7.ebx = 1u << 16;
  with7.push_back(l7);
  EXPECT_TRUE(restore::x86::CheckCpuidSupported(list.asReader(), with7).ok());
}

class FakeVm : public kx::VmOps {
 public:
  Result<int> CheckExtension(long cap) override { return cap == KVM_CAP_XSAVE2 ? 4096 : 1; }
  Result<kvm_irqchip> GetIrqchip(uint32_t id) override { kvm_irqchip c{}; c.chip_id = id; return c; }
  Status SetIrqchip(const kvm_irqchip&) override { return Status::Ok(); }
  Result<kvm_pit_state2> GetPit2() override { return kvm_pit_state2{}; }
  Status SetPit2(const kvm_pit_state2&) override { return Status::Ok(); }
  Result<kvm_clock_data> GetClock() override { return kvm_clock_data{}; }
  Status SetClock(const kvm_clock_data&) override { return Status::Ok(); }
  Status SetTssAddr(uint64_t) override { return Status::Ok(); }
  Status SetIdentityMapAddr(uint64_t) override { return Status::Ok(); }
  Status CreateIrqchip() override { return Status::Ok(); }
  Status CreatePit2(uint32_t) override { return Status::Ok(); }
  Status EnableCap(uint32_t, std::span<const uint64_t>) override { return Status::Ok(); }
  Result<std::vector<kvm_cpuid_entry2>> SupportedCpuid() override { return std::vector<kvm_cpuid_entry2>{}; }
  Result<std::vector<uint32_t>> MsrIndexList() override { return std::vector<uint32_t>{0x10, 0x174, 0x175}; }
};

TEST(CaptureFaults, UnreadableMsrIsNamed) {
  FakeVm vm;
  FakeVcpu probe(0);
  FakeVcpu vcpu(3);
  vcpu.unreadable_msr = 0x175;  // readable when probed on vCPU 0, not on vCPU 3
  kx::VmConfig cfg;
  capture::x86::X86Capturer cap(&vm, {&probe, &vcpu}, cfg);
  capnp::MallocMessageBuilder msg;
  auto v = msg.initRoot<schema::x86::Vcpu>();
  ASSERT_TRUE(cap.CaptureVcpu(probe, v).ok());
  Status s = cap.CaptureVcpu(vcpu, v);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("KVM_GET_MSRS on vCPU 3"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("MSR 0x175"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace vmsnap
