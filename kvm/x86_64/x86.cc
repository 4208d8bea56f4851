// SPDX-License-Identifier: MIT
// Real x86-64 KVM state ioctls and host capability probing: see x86.h.
#include "kvm/x86_64/x86.h"

#include <sys/ioctl.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/hex.h"

namespace vmsnap::kvm::x86 {
namespace {

// The uapi structs ending in __DECLARE_FLEX_ARRAY have a different sizeof in
// C++ than in C (the empty-struct trick adds bytes), which changes both where
// the entries start and the size encoded in the ioctl numbers built from
// them. So the C layout is spelled out here: header bytes, and ioctl numbers
// with the kernel's sizes.
constexpr size_t kMsrsHeader = 8;      // struct kvm_msrs {nmsrs, pad}
constexpr size_t kMsrListHeader = 4;   // struct kvm_msr_list {nmsrs}
constexpr size_t kCpuid2Header = 8;    // struct kvm_cpuid2 {nent, padding}
constexpr size_t kXsaveLegacy = 4096;  // struct kvm_xsave without `extra`
constexpr unsigned long kIocGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, kMsrsHeader);
constexpr unsigned long kIocSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, kMsrsHeader);
constexpr unsigned long kIocGetMsrIndexList = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x02, kMsrListHeader);
constexpr unsigned long kIocGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, kCpuid2Header);
constexpr unsigned long kIocSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, kCpuid2Header);
constexpr unsigned long kIocGetCpuid2 = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x91, kCpuid2Header);
constexpr unsigned long kIocGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, kXsaveLegacy);
constexpr unsigned long kIocSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, kXsaveLegacy);
constexpr unsigned long kIocGetXsave2 = _IOC(_IOC_READ, KVMIO, 0xcf, kXsaveLegacy);

// A 32-bit count, padding to `header` bytes, then the entries: one buffer.
template <typename Entry>
struct FlexBuffer {
  FlexBuffer(size_t header, size_t n) : header_size(header), bytes(header + n * sizeof(Entry), 0) {}
  uint32_t& count() { return *reinterpret_cast<uint32_t*>(bytes.data()); }
  Entry* entries() { return reinterpret_cast<Entry*>(bytes.data() + header_size); }
  void* data() { return bytes.data(); }
  size_t header_size;
  std::vector<uint8_t> bytes;
};

bool EmptyCpuidEntry(const kvm_cpuid_entry2& e) {
  return e.function == 0 && e.index == 0 && e.flags == 0 && e.eax == 0 && e.ebx == 0 &&
         e.ecx == 0 && e.edx == 0;
}

}  // namespace

std::vector<uint32_t> UnlistedSavedMsrs() {
  std::vector<uint32_t> v;
  v.push_back(0x48);  // IA32_SPEC_CTRL
  for (uint32_t m = 0x200; m <= 0x20f; ++m) v.push_back(m);  // variable-range MTRRs
  v.push_back(0x250);                                          // MTRR fix64K
  v.push_back(0x258);
  v.push_back(0x259);                                          // MTRR fix16K
  for (uint32_t m = 0x268; m <= 0x26f; ++m) v.push_back(m);  // MTRR fix4K
  v.push_back(0x2ff);                                          // MTRR default type
  v.push_back(0xda0);                                          // IA32_XSS
  v.push_back(kMsrTscAux);
  return v;
}

Status VcpuOps::GetMsrsAll(std::vector<kvm_msr_entry>& entries) {
  VMSNAP_ASSIGN_OR_RETURN(size_t n, GetMsrs(entries));
  if (n < entries.size()) {
    return Status::Kvm("KVM_GET_MSRS" + where() + ": entry " + std::to_string(n) + " (MSR " +
                       Hex(entries[n].index) + ") could not be read");
  }
  return Status::Ok();
}

Status VcpuOps::SetMsrsAll(std::span<const kvm_msr_entry> entries) {
  VMSNAP_ASSIGN_OR_RETURN(size_t n, SetMsrs(entries));
  if (n < entries.size()) {
    return Status::Kvm("KVM_SET_MSRS" + where() + ": entry " + std::to_string(n) + " (MSR " +
                       Hex(entries[n].index) + ") rejected");
  }
  return Status::Ok();
}

Result<HostCaps> VmOps::ProbeCaps() {
  HostCaps c;
  auto has = [this](long cap) -> Result<int> { return CheckExtension(cap); };
  VMSNAP_ASSIGN_OR_RETURN(int sregs2, has(KVM_CAP_SREGS2));
  VMSNAP_ASSIGN_OR_RETURN(int xsave, has(KVM_CAP_XSAVE));
  VMSNAP_ASSIGN_OR_RETURN(int xsave2, has(KVM_CAP_XSAVE2));
  VMSNAP_ASSIGN_OR_RETURN(int xcrs, has(KVM_CAP_XCRS));
  VMSNAP_ASSIGN_OR_RETURN(int debugregs, has(KVM_CAP_DEBUGREGS));
  VMSNAP_ASSIGN_OR_RETURN(int events, has(KVM_CAP_VCPU_EVENTS));
  VMSNAP_ASSIGN_OR_RETURN(int payload, has(KVM_CAP_EXCEPTION_PAYLOAD));
  VMSNAP_ASSIGN_OR_RETURN(int clockctrl, has(KVM_CAP_KVMCLOCK_CTRL));
  VMSNAP_ASSIGN_OR_RETURN(int tscctl, has(KVM_CAP_TSC_CONTROL));
  VMSNAP_ASSIGN_OR_RETURN(int gettsc, has(KVM_CAP_GET_TSC_KHZ));
  VMSNAP_ASSIGN_OR_RETURN(int triple, has(KVM_CAP_X86_TRIPLE_FAULT_EVENT));
  c.sregs2 = sregs2 > 0;
  c.xsave = xsave > 0;
  c.xsave_size = xsave2 > 4096 ? static_cast<size_t>(xsave2) : 4096;
  c.xcrs = xcrs > 0;
  c.debugregs = debugregs > 0;
  c.vcpu_events = events > 0;
  c.exception_payload = payload > 0;
  c.kvmclock_ctrl = clockctrl > 0;
  c.tsc_control = tscctl > 0;
  c.get_tsc_khz = gettsc > 0;
  c.triple_fault_event = triple > 0;
  return c;
}

// ---- vCPU ----

#define VCPU_GET(Type, Req, Name)                                   \
  Type v{};                                                         \
  VMSNAP_RETURN_IF_ERROR(Ioctl(vcpu_->fd(), Req, &v, Name, vcpu_->where()).status()); \
  return v

#define VCPU_SET(Req, Name, arg) \
  return Ioctl(vcpu_->fd(), Req, const_cast<void*>(static_cast<const void*>(&arg)), Name, vcpu_->where()).status()

Result<kvm_mp_state> RealVcpuOps::GetMpState() { VCPU_GET(kvm_mp_state, KVM_GET_MP_STATE, "KVM_GET_MP_STATE"); }
Status RealVcpuOps::SetMpState(const kvm_mp_state& s) { VCPU_SET(KVM_SET_MP_STATE, "KVM_SET_MP_STATE", s); }
Result<kvm_regs> RealVcpuOps::GetRegs() { VCPU_GET(kvm_regs, KVM_GET_REGS, "KVM_GET_REGS"); }
Status RealVcpuOps::SetRegs(const kvm_regs& r) { VCPU_SET(KVM_SET_REGS, "KVM_SET_REGS", r); }
Result<kvm_sregs> RealVcpuOps::GetSregs() { VCPU_GET(kvm_sregs, KVM_GET_SREGS, "KVM_GET_SREGS"); }
Status RealVcpuOps::SetSregs(const kvm_sregs& s) { VCPU_SET(KVM_SET_SREGS, "KVM_SET_SREGS", s); }
Result<kvm_sregs2> RealVcpuOps::GetSregs2() { VCPU_GET(kvm_sregs2, KVM_GET_SREGS2, "KVM_GET_SREGS2"); }
Status RealVcpuOps::SetSregs2(const kvm_sregs2& s) { VCPU_SET(KVM_SET_SREGS2, "KVM_SET_SREGS2", s); }
Result<kvm_xcrs> RealVcpuOps::GetXcrs() { VCPU_GET(kvm_xcrs, KVM_GET_XCRS, "KVM_GET_XCRS"); }
Status RealVcpuOps::SetXcrs(const kvm_xcrs& x) { VCPU_SET(KVM_SET_XCRS, "KVM_SET_XCRS", x); }
Result<kvm_debugregs> RealVcpuOps::GetDebugRegs() { VCPU_GET(kvm_debugregs, KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS"); }
Status RealVcpuOps::SetDebugRegs(const kvm_debugregs& d) { VCPU_SET(KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", d); }
Result<kvm_lapic_state> RealVcpuOps::GetLapic() { VCPU_GET(kvm_lapic_state, KVM_GET_LAPIC, "KVM_GET_LAPIC"); }
Status RealVcpuOps::SetLapic(const kvm_lapic_state& l) { VCPU_SET(KVM_SET_LAPIC, "KVM_SET_LAPIC", l); }
Result<kvm_vcpu_events> RealVcpuOps::GetVcpuEvents() { VCPU_GET(kvm_vcpu_events, KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS"); }
Status RealVcpuOps::SetVcpuEvents(const kvm_vcpu_events& e) { VCPU_SET(KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", e); }

Result<std::vector<uint8_t>> RealVcpuOps::GetXsave(size_t size) {
  if (size < kXsaveLegacy) size = kXsaveLegacy;
  std::vector<uint8_t> area(size, 0);
  // KVM_GET_XSAVE2 writes as many bytes as KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)
  // said; plain KVM_GET_XSAVE only the legacy 4096.
  unsigned long req = size > kXsaveLegacy ? kIocGetXsave2 : kIocGetXsave;
  const char* name = size > kXsaveLegacy ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE";
  VMSNAP_RETURN_IF_ERROR(Ioctl(vcpu_->fd(), req, area.data(), name, vcpu_->where()).status());
  return area;
}

Status RealVcpuOps::SetXsave(std::span<const uint8_t> area) {
  if (area.size() < kXsaveLegacy) {
    return Status::InvalidArgument("KVM_SET_XSAVE" + vcpu_->where() + ": area of " +
                                   std::to_string(area.size()) + " bytes is shorter than 4096");
  }
  std::vector<uint8_t> copy(area.begin(), area.end());
  return Ioctl(vcpu_->fd(), kIocSetXsave, copy.data(), "KVM_SET_XSAVE", vcpu_->where()).status();
}

Result<size_t> RealVcpuOps::GetMsrs(std::vector<kvm_msr_entry>& entries) {
  FlexBuffer<kvm_msr_entry> buf(kMsrsHeader, entries.size());
  buf.count() = static_cast<uint32_t>(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) buf.entries()[i].index = entries[i].index;
  VMSNAP_ASSIGN_OR_RETURN(int n, Ioctl(vcpu_->fd(), kIocGetMsrs, buf.data(), "KVM_GET_MSRS", vcpu_->where()));
  for (size_t i = 0; i < entries.size() && i < static_cast<size_t>(n); ++i) entries[i].data = buf.entries()[i].data;
  return static_cast<size_t>(n);
}

Result<size_t> RealVcpuOps::SetMsrs(std::span<const kvm_msr_entry> entries) {
  FlexBuffer<kvm_msr_entry> buf(kMsrsHeader, entries.size());
  buf.count() = static_cast<uint32_t>(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) buf.entries()[i] = entries[i];
  VMSNAP_ASSIGN_OR_RETURN(int n, Ioctl(vcpu_->fd(), kIocSetMsrs, buf.data(), "KVM_SET_MSRS", vcpu_->where()));
  return static_cast<size_t>(n);
}

Result<std::vector<kvm_cpuid_entry2>> RealVcpuOps::GetCpuid() {
  for (size_t cap = 128; cap <= 4096; cap *= 2) {
    FlexBuffer<kvm_cpuid_entry2> buf(kCpuid2Header, cap);
    buf.count() = static_cast<uint32_t>(cap);
    int r = ::ioctl(vcpu_->fd(), kIocGetCpuid2, buf.data());
    if (r < 0 && errno == E2BIG) continue;
    if (r < 0) {
      int err = errno;
      return Status::Kvm("KVM_GET_CPUID2" + vcpu_->where() + ": " + std::strerror(err));
    }
    std::vector<kvm_cpuid_entry2> out(buf.entries(), buf.entries() + buf.count());
    // KVM does not trim nent to the entries it filled.
    while (!out.empty() && EmptyCpuidEntry(out.back())) out.pop_back();
    return out;
  }
  return Status::Kvm("KVM_GET_CPUID2" + vcpu_->where() + ": more than 4096 entries");
}

Status RealVcpuOps::SetCpuid(std::span<const kvm_cpuid_entry2> entries) {
  FlexBuffer<kvm_cpuid_entry2> buf(kCpuid2Header, entries.size());
  buf.count() = static_cast<uint32_t>(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) buf.entries()[i] = entries[i];
  return Ioctl(vcpu_->fd(), kIocSetCpuid2, buf.data(), "KVM_SET_CPUID2", vcpu_->where()).status();
}

Result<uint32_t> RealVcpuOps::GetTscKhz() {
  VMSNAP_ASSIGN_OR_RETURN(int khz, Ioctl(vcpu_->fd(), KVM_GET_TSC_KHZ, nullptr, "KVM_GET_TSC_KHZ", vcpu_->where()));
  return static_cast<uint32_t>(khz);
}

Status RealVcpuOps::SetTscKhz(uint32_t khz) {
  return Ioctl(vcpu_->fd(), KVM_SET_TSC_KHZ, reinterpret_cast<void*>(static_cast<unsigned long>(khz)),
               "KVM_SET_TSC_KHZ", vcpu_->where())
      .status();
}

Result<bool> RealVcpuOps::KvmclockCtrl() {
  int r = ::ioctl(vcpu_->fd(), KVM_KVMCLOCK_CTRL, 0);
  if (r == 0) return true;
  if (errno == EINVAL) return false;  // the guest never enabled kvmclock
  int err = errno;
  return Status::Kvm("KVM_KVMCLOCK_CTRL" + vcpu_->where() + ": " + std::strerror(err));
}

// ---- VM ----

Result<kvm_irqchip> RealVmOps::GetIrqchip(uint32_t chip_id) {
  kvm_irqchip c{};
  c.chip_id = chip_id;
  VMSNAP_RETURN_IF_ERROR(Ioctl(vm_->fd(), KVM_GET_IRQCHIP, &c, "KVM_GET_IRQCHIP",
                               " (chip " + std::to_string(chip_id) + ")").status());
  return c;
}

Status RealVmOps::SetIrqchip(const kvm_irqchip& chip) {
  kvm_irqchip c = chip;
  return Ioctl(vm_->fd(), KVM_SET_IRQCHIP, &c, "KVM_SET_IRQCHIP", " (chip " + std::to_string(chip.chip_id) + ")")
      .status();
}

Result<kvm_pit_state2> RealVmOps::GetPit2() {
  kvm_pit_state2 p{};
  VMSNAP_RETURN_IF_ERROR(Ioctl(vm_->fd(), KVM_GET_PIT2, &p, "KVM_GET_PIT2").status());
  return p;
}

Status RealVmOps::SetPit2(const kvm_pit_state2& pit) {
  kvm_pit_state2 p = pit;
  return Ioctl(vm_->fd(), KVM_SET_PIT2, &p, "KVM_SET_PIT2").status();
}

Result<kvm_clock_data> RealVmOps::GetClock() {
  kvm_clock_data c{};
  VMSNAP_RETURN_IF_ERROR(Ioctl(vm_->fd(), KVM_GET_CLOCK, &c, "KVM_GET_CLOCK").status());
  return c;
}

Status RealVmOps::SetClock(const kvm_clock_data& clock) {
  kvm_clock_data c = clock;
  return Ioctl(vm_->fd(), KVM_SET_CLOCK, &c, "KVM_SET_CLOCK").status();
}

Status RealVmOps::SetTssAddr(uint64_t addr) {
  return Ioctl(vm_->fd(), KVM_SET_TSS_ADDR, reinterpret_cast<void*>(addr), "KVM_SET_TSS_ADDR").status();
}

Status RealVmOps::SetIdentityMapAddr(uint64_t addr) {
  uint64_t a = addr;
  return Ioctl(vm_->fd(), KVM_SET_IDENTITY_MAP_ADDR, &a, "KVM_SET_IDENTITY_MAP_ADDR").status();
}

Status RealVmOps::CreateIrqchip() {
  return Ioctl(vm_->fd(), KVM_CREATE_IRQCHIP, nullptr, "KVM_CREATE_IRQCHIP").status();
}

Status RealVmOps::CreatePit2(uint32_t flags) {
  kvm_pit_config cfg{};
  cfg.flags = flags;
  return Ioctl(vm_->fd(), KVM_CREATE_PIT2, &cfg, "KVM_CREATE_PIT2").status();
}

Result<std::vector<kvm_cpuid_entry2>> RealVmOps::SupportedCpuid() {
  for (size_t cap = 128; cap <= 4096; cap *= 2) {
    FlexBuffer<kvm_cpuid_entry2> buf(kCpuid2Header, cap);
    buf.count() = static_cast<uint32_t>(cap);
    int r = ::ioctl(vm_->system().fd(), kIocGetSupportedCpuid, buf.data());
    if (r < 0 && errno == E2BIG) continue;
    if (r < 0) {
      int err = errno;
      return Status::Kvm(std::string("KVM_GET_SUPPORTED_CPUID: ") + std::strerror(err));
    }
    return std::vector<kvm_cpuid_entry2>(buf.entries(), buf.entries() + buf.count());
  }
  return Status::Kvm("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

Result<std::vector<uint32_t>> RealVmOps::MsrIndexList() {
  for (size_t cap = 64; cap <= 8192; cap *= 2) {
    FlexBuffer<uint32_t> buf(kMsrListHeader, cap);
    buf.count() = static_cast<uint32_t>(cap);
    int r = ::ioctl(vm_->system().fd(), kIocGetMsrIndexList, buf.data());
    if (r < 0 && errno == E2BIG) continue;
    if (r < 0) {
      int err = errno;
      return Status::Kvm(std::string("KVM_GET_MSR_INDEX_LIST: ") + std::strerror(err));
    }
    return std::vector<uint32_t>(buf.entries(), buf.entries() + buf.count());
  }
  return Status::Kvm("KVM_GET_MSR_INDEX_LIST: more than 8192 MSRs");
}

}  // namespace vmsnap::kvm::x86
