// SPDX-License-Identifier: MIT
// The s390x interface over real ioctls (usable on an s390 KVM host only).
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "kvm/s390x/s390.h"
#include "kvm/raw_ioctl.h"

#if defined(__s390x__)
#include <asm/kvm.h>
// The mirrors must match the real uapi layout, or the ioctl numbers (which
// encode the struct size) and the copies would be wrong.
static_assert(sizeof(vmsnap::kvm::s390::Regs) == sizeof(struct kvm_regs));
static_assert(sizeof(vmsnap::kvm::s390::Sregs) == sizeof(struct kvm_sregs));
static_assert(sizeof(vmsnap::kvm::s390::Fpu) == sizeof(struct kvm_fpu));
static_assert(vmsnap::kvm::s390::kVmMigration == KVM_S390_VM_MIGRATION);
static_assert(vmsnap::kvm::s390::kVmMigrationStart == KVM_S390_VM_MIGRATION_START);
static_assert(vmsnap::kvm::s390::kVmMemEnableCmma == KVM_S390_VM_MEM_ENABLE_CMMA);
static_assert(vmsnap::kvm::s390::kVmTodHigh == KVM_S390_VM_TOD_HIGH);
static_assert(vmsnap::kvm::s390::kRegGbea == KVM_REG_S390_GBEA);
#endif

namespace vmsnap::kvm::s390 {
namespace {

// Request numbers built from the mirrored sizes: equal to the uapi ones on s390x.
constexpr unsigned long kGetRegs = _IOR(KVMIO, 0x81, Regs);
constexpr unsigned long kSetRegs = _IOW(KVMIO, 0x82, Regs);
constexpr unsigned long kGetSregs = _IOR(KVMIO, 0x83, Sregs);
constexpr unsigned long kSetSregs = _IOW(KVMIO, 0x84, Sregs);
constexpr unsigned long kGetFpu = _IOR(KVMIO, 0x8c, Fpu);
constexpr unsigned long kSetFpu = _IOW(KVMIO, 0x8d, Fpu);


class IoctlVm final : public Vm {
 public:
  explicit IoctlVm(int fd) : fd_(fd) {}
  int GetCmmaBits(CmmaLog* log) override { return RawIoctl(fd_, KVM_S390_GET_CMMA_BITS, log); }
  int SetCmmaBits(const CmmaLog& log) override { return RawIoctl(fd_, KVM_S390_SET_CMMA_BITS, &log); }
  int GetSkeys(const Skeys& a) override { return RawIoctl(fd_, KVM_S390_GET_SKEYS, &a); }
  int SetSkeys(const Skeys& a) override { return RawIoctl(fd_, KVM_S390_SET_SKEYS, &a); }
  int SetAttr(const kvm_device_attr& a) override { return RawIoctl(fd_, KVM_SET_DEVICE_ATTR, &a); }
  int GetAttr(const kvm_device_attr& a) override { return RawIoctl(fd_, KVM_GET_DEVICE_ATTR, &a); }
  int HasAttr(const kvm_device_attr& a) override { return RawIoctl(fd_, KVM_HAS_DEVICE_ATTR, &a); }

 private:
  int fd_;
};

class IoctlVcpu final : public Vcpu {
 public:
  IoctlVcpu(int fd, void* run) : fd_(fd), run_(run) {}
  int GetRegs(Regs* r) override { return Native(kGetRegs, r); }
  int SetRegs(const Regs& r) override { return Native(kSetRegs, &r); }
  int GetSregs(Sregs* s) override { return Native(kGetSregs, s); }
  int SetSregs(const Sregs& s) override { return Native(kSetSregs, &s); }
  int GetFpu(Fpu* f) override { return Native(kGetFpu, f); }
  int SetFpu(const Fpu& f) override { return Native(kSetFpu, &f); }
  int GetOneReg(const kvm_one_reg& r) override { return RawIoctl(fd_, KVM_GET_ONE_REG, &r); }
  int SetOneReg(const kvm_one_reg& r) override { return RawIoctl(fd_, KVM_SET_ONE_REG, &r); }
  int GetMpState(kvm_mp_state* s) override { return RawIoctl(fd_, KVM_GET_MP_STATE, s); }
  int SetMpState(const kvm_mp_state& s) override { return RawIoctl(fd_, KVM_SET_MP_STATE, &s); }

#if defined(__s390x__)
  int GetPsw(uint64_t* mask, uint64_t* addr) override {
    auto* run = static_cast<kvm_run*>(run_);
    *mask = run->psw_mask;
    *addr = run->psw_addr;
    return 0;
  }
  int SetPsw(uint64_t mask, uint64_t addr) override {
    auto* run = static_cast<kvm_run*>(run_);
    run->psw_mask = mask;
    run->psw_addr = addr;
    return 0;
  }
  int GetPrefix(uint32_t* prefix) override {
    auto* run = static_cast<kvm_run*>(run_);
    if (!(run->kvm_valid_regs & KVM_SYNC_PREFIX)) return -ENXIO;
    *prefix = static_cast<uint32_t>(run->s.regs.prefix);
    return 0;
  }
  int SetPrefix(uint32_t prefix) override {
    auto* run = static_cast<kvm_run*>(run_);
    run->s.regs.prefix = prefix;
    run->kvm_dirty_regs |= KVM_SYNC_PREFIX;  // taken by the next KVM_RUN
    return 0;
  }
#else
  int GetPsw(uint64_t*, uint64_t*) override { return -ENOSYS; }
  int SetPsw(uint64_t, uint64_t) override { return -ENOSYS; }
  int GetPrefix(uint32_t*) override { return -ENOSYS; }
  int SetPrefix(uint32_t) override { return -ENOSYS; }
#endif

 private:
  // The register structs are s390's; on another host the same request number
  // means something else, so refuse rather than corrupt memory.
  int Native(unsigned long request, const void* arg) {
#if defined(__s390x__)
    return RawIoctl(fd_, request, arg);
#else
    (void)request;
    (void)arg;
    return -ENOSYS;
#endif
  }
  int fd_;
  [[maybe_unused]] void* run_;
};

}  // namespace

std::unique_ptr<Vm> NewIoctlVm(int vm_fd) { return std::make_unique<IoctlVm>(vm_fd); }
std::unique_ptr<Vcpu> NewIoctlVcpu(int vcpu_fd, void* kvm_run) {
  return std::make_unique<IoctlVcpu>(vcpu_fd, kvm_run);
}

}  // namespace vmsnap::kvm::s390
