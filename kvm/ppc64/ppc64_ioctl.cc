// SPDX-License-Identifier: MIT
// The ppc64 interface over real ioctls (usable on a POWER KVM host only).
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

#include "base/fd.h"
#include "kvm/ppc64/ppc64.h"
#include "kvm/raw_ioctl.h"

#if defined(__powerpc64__)
#include <asm/kvm.h>
// The mirrors must match the real uapi layout: the ioctl numbers encode the
// struct sizes, and the kernel copies exactly that many bytes.
static_assert(sizeof(vmsnap::kvm::ppc::Regs) == sizeof(struct kvm_regs));
static_assert(sizeof(vmsnap::kvm::ppc::Sregs) == sizeof(struct kvm_sregs));
static_assert(sizeof(vmsnap::kvm::ppc::HtabFdArgs) == sizeof(struct kvm_get_htab_fd));
static_assert(sizeof(vmsnap::kvm::ppc::HtabHeader) == sizeof(struct kvm_get_htab_header));
static_assert(vmsnap::kvm::ppc::kHtabBoltedOnly == KVM_GET_HTAB_BOLTED_ONLY);
static_assert(vmsnap::kvm::ppc::kHtabWrite == KVM_GET_HTAB_WRITE);
static_assert(vmsnap::kvm::ppc::kRegFpr0 == KVM_REG_PPC_FPR0);
static_assert(vmsnap::kvm::ppc::kRegVsr0 == KVM_REG_PPC_VSR0);
static_assert(vmsnap::kvm::ppc::kSprs[0].id == KVM_REG_PPC_DSCR);
static_assert(vmsnap::kvm::ppc::kSprs[32].id == KVM_REG_PPC_IC);
static_assert(vmsnap::kvm::ppc::kSprs[38].id == KVM_REG_PPC_LPCR_64);
static_assert(vmsnap::kvm::ppc::kSprs[44].id == KVM_REG_PPC_DEC_EXPIRY);
#endif

namespace vmsnap::kvm::ppc {
namespace {

constexpr unsigned long kGetHtabFdReq = _IOW(KVMIO, 0xaa, HtabFdArgs);
constexpr unsigned long kGetRegs = _IOR(KVMIO, 0x81, Regs);
constexpr unsigned long kSetRegs = _IOW(KVMIO, 0x82, Regs);
constexpr unsigned long kGetSregs = _IOR(KVMIO, 0x83, Sregs);
constexpr unsigned long kSetSregs = _IOW(KVMIO, 0x84, Sregs);


// Request numbers and structs are powerpc's; elsewhere refuse rather than
// hand a foreign layout to the kernel.
int Native(int fd, unsigned long request, const void* arg) {
#if defined(__powerpc64__)
  constexpr bool kNativeHost = true;
#else
  constexpr bool kNativeHost = false;
#endif
  return NativeIoctl(kNativeHost, fd, request, arg);
}

class FdHtabFile final : public HtabFile {
 public:
  explicit FdHtabFile(int fd) : fd_(fd) {}
  ssize_t Read(void* buf, size_t len) override {
    ssize_t r = ::read(fd_.get(), buf, len);
    return r < 0 ? -errno : r;
  }
  ssize_t Write(const void* buf, size_t len) override {
    ssize_t r = ::write(fd_.get(), buf, len);
    return r < 0 ? -errno : r;
  }

 private:
  UniqueFd fd_;
};

class IoctlVm final : public Vm {
 public:
  explicit IoctlVm(int fd) : fd_(fd) {}
  int GetHtabFd(const HtabFdArgs& args, std::unique_ptr<HtabFile>* out) override {
    int r = Native(fd_, kGetHtabFdReq, &args);
    if (r >= 0) *out = std::make_unique<FdHtabFile>(r);
    return r < 0 ? r : 0;
  }
  int AllocateHtab(uint32_t* order) override { return RawIoctl(fd_, KVM_PPC_ALLOCATE_HTAB, order); }

 private:
  int fd_;
};

class IoctlVcpu final : public Vcpu {
 public:
  explicit IoctlVcpu(int fd) : fd_(fd) {}
  int GetRegs(Regs* r) override { return Native(fd_, kGetRegs, r); }
  int SetRegs(const Regs& r) override { return Native(fd_, kSetRegs, &r); }
  int GetSregs(Sregs* s) override { return Native(fd_, kGetSregs, s); }
  int SetSregs(const Sregs& s) override { return Native(fd_, kSetSregs, &s); }
  int GetOneReg(const kvm_one_reg& r) override { return RawIoctl(fd_, KVM_GET_ONE_REG, &r); }
  int SetOneReg(const kvm_one_reg& r) override { return RawIoctl(fd_, KVM_SET_ONE_REG, &r); }
  int GetMpState(kvm_mp_state* s) override { return RawIoctl(fd_, KVM_GET_MP_STATE, s); }
  int SetMpState(const kvm_mp_state& s) override { return RawIoctl(fd_, KVM_SET_MP_STATE, &s); }

 private:
  int fd_;
};

}  // namespace

std::unique_ptr<Vm> NewIoctlVm(int vm_fd) { return std::make_unique<IoctlVm>(vm_fd); }
std::unique_ptr<Vcpu> NewIoctlVcpu(int vcpu_fd) { return std::make_unique<IoctlVcpu>(vcpu_fd); }

}  // namespace vmsnap::kvm::ppc
