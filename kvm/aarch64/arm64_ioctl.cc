// SPDX-License-Identifier: MIT
// The aarch64 interface over real ioctls (usable on an arm64 KVM host only).
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "kvm/aarch64/arm64.h"
#include "kvm/raw_ioctl.h"
#include "base/fd.h"

#if defined(__aarch64__)
#include <asm/kvm.h>
// The mirrors must match the real uapi: the ioctl numbers encode the struct
// sizes, and the kernel copies exactly that many bytes.
static_assert(sizeof(vmsnap::kvm::arm64::VcpuInit) == sizeof(struct kvm_vcpu_init));
static_assert(sizeof(vmsnap::kvm::arm64::VcpuEvents) == sizeof(struct kvm_vcpu_events));
static_assert(vmsnap::kvm::arm64::kRegPstate == (KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM_CORE |
                                                 KVM_REG_ARM_CORE_REG(regs.pstate)));
static_assert(vmsnap::kvm::arm64::kRegFpcr == (KVM_REG_ARM64 | KVM_REG_SIZE_U32 | KVM_REG_ARM_CORE |
                                               KVM_REG_ARM_CORE_REG(fp_regs.fpcr)));
static_assert(vmsnap::kvm::arm64::VReg(31) == (KVM_REG_ARM64 | KVM_REG_SIZE_U128 | KVM_REG_ARM_CORE |
                                               KVM_REG_ARM_CORE_REG(fp_regs.vregs[31])));
static_assert(vmsnap::kvm::arm64::kTimerCnt == KVM_REG_ARM_TIMER_CNT);
static_assert(vmsnap::kvm::arm64::kTimerCval == KVM_REG_ARM_TIMER_CVAL);
static_assert(vmsnap::kvm::arm64::kRegSveVls == KVM_REG_ARM64_SVE_VLS);
static_assert(vmsnap::kvm::arm64::kRegFfr == KVM_REG_ARM64_SVE_FFR(0));
static_assert(vmsnap::kvm::arm64::ZReg(7) == KVM_REG_ARM64_SVE_ZREG(7, 0));
static_assert(vmsnap::kvm::arm64::kFwSmcccWorkaround2 == KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2);
static_assert(vmsnap::kvm::arm64::kGrpLevelInfo == KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO);
static_assert(vmsnap::kvm::arm64::kCtrlSavePendingTables == KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES);
#endif

namespace vmsnap::kvm::arm64 {
namespace {

constexpr unsigned long kVcpuInitReq = _IOW(KVMIO, 0xae, VcpuInit);
constexpr unsigned long kFinalizeReq = _IOW(KVMIO, 0xc2, int);
constexpr unsigned long kGetEventsReq = _IOR(KVMIO, 0x9f, VcpuEvents);
constexpr unsigned long kSetEventsReq = _IOW(KVMIO, 0xa0, VcpuEvents);
// Not in every distribution's headers yet (Linux 6.4).
constexpr unsigned long kSetCounterOffsetReq = _IOW(KVMIO, 0xb5, CounterOffset);


// Request numbers and structs are arm64's; elsewhere refuse rather than hand
// a foreign layout to the kernel.
int Native(int fd, unsigned long request, const void* arg) {
#if defined(__aarch64__)
  constexpr bool kNativeHost = true;
#else
  constexpr bool kNativeHost = false;
#endif
  return NativeIoctl(kNativeHost, fd, request, arg);
}

class IoctlDevice final : public Device {
 public:
  explicit IoctlDevice(int fd) : fd_(fd) {}
  int SetAttr(const kvm_device_attr& a) override { return RawIoctl(fd_.get(), KVM_SET_DEVICE_ATTR, &a); }
  int GetAttr(const kvm_device_attr& a) override { return RawIoctl(fd_.get(), KVM_GET_DEVICE_ATTR, &a); }
  int HasAttr(const kvm_device_attr& a) override { return RawIoctl(fd_.get(), KVM_HAS_DEVICE_ATTR, &a); }

 private:
  UniqueFd fd_;
};

class IoctlVm final : public Vm {
 public:
  explicit IoctlVm(int fd) : fd_(fd) {}
  int CreateDevice(uint32_t type, std::unique_ptr<Device>* out) override {
    kvm_create_device cd{};
    cd.type = type;
    int r = RawIoctl(fd_, KVM_CREATE_DEVICE, &cd);
    if (r < 0) return r;
    *out = std::make_unique<IoctlDevice>(static_cast<int>(cd.fd));
    return 0;
  }
  int SetCounterOffset(const CounterOffset& off) override { return Native(fd_, kSetCounterOffsetReq, &off); }

 private:
  int fd_;
};

class IoctlVcpu final : public Vcpu {
 public:
  explicit IoctlVcpu(int fd) : fd_(fd) {}
  int Init(const VcpuInit& init) override { return Native(fd_, kVcpuInitReq, &init); }
  int Finalize(int feature) override { return Native(fd_, kFinalizeReq, &feature); }
  int GetRegList(uint64_t* n, uint64_t* ids) override {
    // struct kvm_reg_list: n, then the ids.
    std::vector<uint64_t> buf(1 + *n);
    buf[0] = *n;
    int r = RawIoctl(fd_, KVM_GET_REG_LIST, buf.data());
    *n = buf[0];
    if (r >= 0) std::copy(buf.begin() + 1, buf.begin() + 1 + static_cast<long>(buf[0]), ids);
    return r;
  }
  int GetOneReg(const kvm_one_reg& r) override { return RawIoctl(fd_, KVM_GET_ONE_REG, &r); }
  int SetOneReg(const kvm_one_reg& r) override { return RawIoctl(fd_, KVM_SET_ONE_REG, &r); }
  int GetMpState(kvm_mp_state* s) override { return RawIoctl(fd_, KVM_GET_MP_STATE, s); }
  int SetMpState(const kvm_mp_state& s) override { return RawIoctl(fd_, KVM_SET_MP_STATE, &s); }
  int GetEvents(VcpuEvents* e) override { return Native(fd_, kGetEventsReq, e); }
  int SetEvents(const VcpuEvents& e) override { return Native(fd_, kSetEventsReq, &e); }

 private:
  int fd_;
};

}  // namespace

std::unique_ptr<Vm> NewIoctlVm(int vm_fd) { return std::make_unique<IoctlVm>(vm_fd); }
std::unique_ptr<Vcpu> NewIoctlVcpu(int vcpu_fd) { return std::make_unique<IoctlVcpu>(vcpu_fd); }
std::unique_ptr<Device> NewIoctlDevice(int device_fd) { return std::make_unique<IoctlDevice>(device_fd); }

}  // namespace vmsnap::kvm::arm64
