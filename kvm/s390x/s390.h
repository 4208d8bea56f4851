// SPDX-License-Identifier: MIT
// s390x KVM interface: the VM ioctls for CMMA values, storage keys, migration
// mode and the TOD clock, and the vCPU register calls, behind abstract classes
// so capture/restore run the same against real KVM (on an s390 host) and the
// kernel model (tests/model/kernel/s390_model.h).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace vmsnap::kvm::s390 {

// A failed call (rc = -errno) as a kKvm Status naming the ioctl and where.
inline Status IoctlStatus(long rc, std::string_view name, std::string_view where = {}) {
  if (rc >= 0) return Status::Ok();
  return Status::Kvm(std::string(name) + std::string(where) + ": " + std::strerror(static_cast<int>(-rc)));
}
// Repeats a call that a signal interrupted (-EINTR), as the kernel expects.
template <typename F>
auto RetryEintr(F&& call) {
  auto r = call();
  for (int tries = 0; r == -EINTR && tries < 1000; ++tries) r = call();
  return r;
}

// struct kvm_s390_cmma_log, struct kvm_s390_skeys, struct kvm_device_attr,
// struct kvm_one_reg and struct kvm_mp_state are in <linux/kvm.h> on every
// architecture. The register structs and the VM attribute numbers live in
// arch/s390/include/uapi/asm/kvm.h, which other hosts lack: mirrored here and
// checked against the real header when compiled for s390x (s390_ioctl.cc).
using CmmaLog = ::kvm_s390_cmma_log;
using Skeys = ::kvm_s390_skeys;

struct Regs {  // struct kvm_regs (s390)
  uint64_t gprs[16];
};
struct Sregs {  // struct kvm_sregs (s390)
  uint32_t acrs[16];
  uint64_t crs[16];
};
struct Fpu {  // struct kvm_fpu (s390)
  uint32_t fpc;
  uint64_t fprs[16];
};

// VM attribute groups and attributes (KVM_SET_DEVICE_ATTR on the VM fd).
inline constexpr uint32_t kVmMemCtrl = 0;        // KVM_S390_VM_MEM_CTRL
inline constexpr uint64_t kVmMemEnableCmma = 0;  // KVM_S390_VM_MEM_ENABLE_CMMA
inline constexpr uint64_t kVmMemClrCmma = 1;     // KVM_S390_VM_MEM_CLR_CMMA
inline constexpr uint32_t kVmTod = 1;            // KVM_S390_VM_TOD
inline constexpr uint64_t kVmTodLow = 0;         // KVM_S390_VM_TOD_LOW
inline constexpr uint64_t kVmTodHigh = 1;        // KVM_S390_VM_TOD_HIGH
inline constexpr uint32_t kVmMigration = 4;      // KVM_S390_VM_MIGRATION
inline constexpr uint64_t kVmMigrationStop = 0;    // KVM_S390_VM_MIGRATION_STOP
inline constexpr uint64_t kVmMigrationStart = 1;   // KVM_S390_VM_MIGRATION_START
inline constexpr uint64_t kVmMigrationStatus = 2;  // KVM_S390_VM_MIGRATION_STATUS

// Limits and flags from the kernel (KVM_S390_CMMA_SIZE_MAX is kernel-internal,
// defined "for consistency" as KVM_S390_SKEYS_MAX).
inline constexpr uint32_t kCmmaSizeMax = KVM_S390_SKEYS_MAX;
inline constexpr uint64_t kSkeysMax = KVM_S390_SKEYS_MAX;
inline constexpr int kGetSkeysNone = KVM_S390_GET_SKEYS_NONE;
inline constexpr uint32_t kCmmaPeek = KVM_S390_CMMA_PEEK;
// Bits of a CMMA value as GET_CMMA_BITS returns them: (pgste >> 24) & 0x43.
inline constexpr uint8_t kCmmaValueBits = 0x43;

// ONE_REG ids (KVM_REG_S390 | size | n).
inline constexpr uint64_t kRegTodpr = KVM_REG_S390 | KVM_REG_SIZE_U32 | 0x1;
inline constexpr uint64_t kRegEpochDiff = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x2;
inline constexpr uint64_t kRegCpuTimer = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x3;
inline constexpr uint64_t kRegClockComp = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x4;
inline constexpr uint64_t kRegPp = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x8;
inline constexpr uint64_t kRegGbea = KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x9;

// s390 MP states.
inline constexpr uint32_t kMpStopped = KVM_MP_STATE_STOPPED;
inline constexpr uint32_t kMpCheckStop = KVM_MP_STATE_CHECK_STOP;
inline constexpr uint32_t kMpOperating = KVM_MP_STATE_OPERATING;
inline constexpr uint32_t kMpLoad = KVM_MP_STATE_LOAD;

// Every call returns what the ioctl returns: >= 0 on success, -errno on
// failure (the kernel's own convention), so the model can be checked errno
// for errno against the documentation. capture/restore turn these into Status.
class Vm {
 public:
  virtual ~Vm() = default;
  // KVM_S390_GET_CMMA_BITS: updates start_gfn, count and remaining in `log`.
  virtual int GetCmmaBits(CmmaLog* log) = 0;
  virtual int SetCmmaBits(const CmmaLog& log) = 0;    // KVM_S390_SET_CMMA_BITS
  // KVM_S390_GET_SKEYS: 0, kGetSkeysNone (the guest never used keys) or -errno.
  virtual int GetSkeys(const Skeys& args) = 0;
  virtual int SetSkeys(const Skeys& args) = 0;        // KVM_S390_SET_SKEYS
  virtual int SetAttr(const kvm_device_attr& attr) = 0;  // KVM_SET_DEVICE_ATTR
  virtual int GetAttr(const kvm_device_attr& attr) = 0;  // KVM_GET_DEVICE_ATTR
  virtual int HasAttr(const kvm_device_attr& attr) = 0;  // KVM_HAS_DEVICE_ATTR
};

class Vcpu {
 public:
  virtual ~Vcpu() = default;
  virtual int GetRegs(Regs* regs) = 0;         // KVM_GET_REGS
  virtual int SetRegs(const Regs& regs) = 0;   // KVM_SET_REGS
  virtual int GetSregs(Sregs* sregs) = 0;      // KVM_GET_SREGS
  virtual int SetSregs(const Sregs& sregs) = 0;
  virtual int GetFpu(Fpu* fpu) = 0;            // KVM_GET_FPU
  virtual int SetFpu(const Fpu& fpu) = 0;
  virtual int GetOneReg(const kvm_one_reg& reg) = 0;  // KVM_GET_ONE_REG
  virtual int SetOneReg(const kvm_one_reg& reg) = 0;
  virtual int GetMpState(kvm_mp_state* state) = 0;    // KVM_GET_MP_STATE
  virtual int SetMpState(const kvm_mp_state& state) = 0;
  // The PSW and the prefix have no ioctl: they travel in the shared run area
  // (kvm_run.psw_mask/psw_addr, and s.regs.prefix with KVM_SYNC_PREFIX), read
  // after KVM_RUN returns and written before the next KVM_RUN.
  virtual int GetPsw(uint64_t* mask, uint64_t* addr) = 0;
  virtual int SetPsw(uint64_t mask, uint64_t addr) = 0;
  virtual int GetPrefix(uint32_t* prefix) = 0;
  virtual int SetPrefix(uint32_t prefix) = 0;
};

// Real implementations over a VM fd / a vCPU fd and its mapped kvm_run. They
// compile on every host; the register and run-area calls work only on s390x
// (elsewhere they return -ENOSYS, since the struct layouts differ).
// Neither takes ownership of the fd or the mapping.
std::unique_ptr<Vm> NewIoctlVm(int vm_fd);
std::unique_ptr<Vcpu> NewIoctlVcpu(int vcpu_fd, void* kvm_run);

}  // namespace vmsnap::kvm::s390
