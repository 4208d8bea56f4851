// SPDX-License-Identifier: MIT
// aarch64 KVM interface: ONE_REG ids and their encoding, vCPU init and
// finalization, the register list, MP state, vCPU events, the counter offset
// and the vGICv3/ITS device attributes, behind abstract classes so that
// capture/restore run the same against real KVM (on an arm64 host) and the
// kernel model (tests/model/kernel/aarch64_model.h).
#pragma once

#include <linux/kvm.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace vmsnap::kvm::arm64 {

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

// ---- ONE_REG ids (Documentation/virt/kvm/api.rst, "KVM_SET_ONE_REG", arm64;
// arch/arm64/include/uapi/asm/kvm.h). Other hosts lack the arm64 header, so
// the encoding is spelled out here and checked against it on arm64.
inline constexpr uint64_t kRegArm64 = 0x6000000000000000ull;  // KVM_REG_ARM64
inline constexpr uint64_t kRegArchMask = 0xff00000000000000ull;
inline constexpr unsigned kRegSizeShift = 52;                  // KVM_REG_SIZE_SHIFT
inline constexpr uint64_t kRegSizeMask = 0x00f0000000000000ull;
inline constexpr uint64_t kU32 = 2ull << kRegSizeShift;
inline constexpr uint64_t kU64 = 3ull << kRegSizeShift;
inline constexpr uint64_t kU128 = 4ull << kRegSizeShift;
inline constexpr uint64_t kU256 = 5ull << kRegSizeShift;
inline constexpr uint64_t kU512 = 6ull << kRegSizeShift;
inline constexpr uint64_t kU2048 = 8ull << kRegSizeShift;
inline constexpr uint64_t kCoprocMask = 0x000000000fff0000ull;  // KVM_REG_ARM_COPROC_MASK
inline constexpr uint64_t kCore = 0x0010ull << 16;              // KVM_REG_ARM_CORE
inline constexpr uint64_t kDemux = 0x0011ull << 16;             // KVM_REG_ARM_DEMUX
inline constexpr uint64_t kSysreg = 0x0013ull << 16;            // KVM_REG_ARM64_SYSREG
inline constexpr uint64_t kFw = 0x0014ull << 16;                // KVM_REG_ARM_FW
inline constexpr uint64_t kSve = 0x0015ull << 16;               // KVM_REG_ARM64_SVE
inline constexpr uint64_t kFwFeatBmap = 0x0016ull << 16;        // KVM_REG_ARM_FW_FEAT_BMAP

// Size in bytes encoded in an id (the size field is log2 of it).
inline size_t OneRegSize(uint64_t id) { return size_t{1} << ((id & kRegSizeMask) >> kRegSizeShift); }
inline uint64_t Coproc(uint64_t id) { return id & kCoprocMask; }

// Core registers: the index is the offset in struct kvm_regs in 32-bit words.
// struct kvm_regs: user_pt_regs {regs[31], sp, pc, pstate} at 0, sp_el1 at
// 272, elr_el1 at 280, spsr[5] at 288, then user_fpsimd_state (16-byte
// aligned) at 336: vregs[32] (16 bytes each), fpsr at 848, fpcr at 852.
inline constexpr uint64_t CoreReg(uint64_t size, uint64_t byte_offset) {
  return kRegArm64 | size | kCore | (byte_offset / 4);
}
inline constexpr uint64_t XReg(unsigned n) { return CoreReg(kU64, 8ull * n); }
inline constexpr uint64_t kRegSp = CoreReg(kU64, 248);
inline constexpr uint64_t kRegPc = CoreReg(kU64, 256);
inline constexpr uint64_t kRegPstate = CoreReg(kU64, 264);
inline constexpr uint64_t kRegSpEl1 = CoreReg(kU64, 272);
inline constexpr uint64_t kRegElrEl1 = CoreReg(kU64, 280);
inline constexpr uint64_t SpsrReg(unsigned n) { return CoreReg(kU64, 288 + 8ull * n); }
inline constexpr uint64_t VReg(unsigned n) { return CoreReg(kU128, 336 + 16ull * n); }
inline constexpr uint64_t kRegFpsr = CoreReg(kU32, 848);
inline constexpr uint64_t kRegFpcr = CoreReg(kU32, 852);
inline constexpr unsigned kNrSpsr = 5;  // KVM_NR_SPSR

// System registers: 0x6030 0000 0013 <op0:2><op1:3><CRn:4><CRm:4><op2:3>.
inline constexpr uint64_t SysReg(unsigned op0, unsigned op1, unsigned crn, unsigned crm, unsigned op2) {
  return kRegArm64 | kU64 | kSysreg | (uint64_t(op0) << 14) | (uint64_t(op1) << 11) |
         (uint64_t(crn) << 7) | (uint64_t(crm) << 3) | op2;
}
// The 16-bit instruction encoding of a system register id (also the low bits
// of a vGIC CPU_SYSREGS attribute).
inline constexpr uint64_t kSysregEncodingMask = 0xffff;
inline constexpr uint64_t kRegMpidrEl1 = SysReg(3, 0, 0, 0, 5);
inline constexpr uint64_t kRegSctlrEl1 = SysReg(3, 0, 1, 0, 0);
inline constexpr uint64_t kRegTtbr0El1 = SysReg(3, 0, 2, 0, 0);
inline constexpr uint64_t kRegTtbr1El1 = SysReg(3, 0, 2, 0, 1);
inline constexpr uint64_t kRegTcrEl1 = SysReg(3, 0, 2, 0, 2);
// The timer registers. TIMER_CNT and TIMER_CVAL break the pattern: their ids
// were swapped by mistake and are kept as API (api.rst says so), so
// TIMER_CVAL has CNTVCT_EL0's encoding and TIMER_CNT has CNTV_CVAL_EL0's.
inline constexpr uint64_t kTimerCtl = SysReg(3, 3, 14, 3, 1);
inline constexpr uint64_t kTimerCnt = SysReg(3, 3, 14, 3, 2);
inline constexpr uint64_t kTimerCval = SysReg(3, 3, 14, 0, 2);
inline constexpr uint64_t kPtimerCtl = SysReg(3, 3, 14, 2, 1);
inline constexpr uint64_t kPtimerCnt = SysReg(3, 3, 14, 0, 1);
inline constexpr uint64_t kPtimerCval = SysReg(3, 3, 14, 2, 2);

// Firmware pseudo-registers (api.rst, "ARM firmware pseudo-registers").
inline constexpr uint64_t FwReg(unsigned n) { return kRegArm64 | kU64 | kFw | n; }
inline constexpr uint64_t kFwPsciVersion = FwReg(0);
inline constexpr uint64_t kFwSmcccWorkaround1 = FwReg(1);
inline constexpr uint64_t kFwSmcccWorkaround2 = FwReg(2);
inline constexpr uint64_t kFwSmcccWorkaround3 = FwReg(3);
inline constexpr uint64_t FwBmapReg(unsigned n) { return kRegArm64 | kU64 | kFwFeatBmap | n; }

// SVE (api.rst, "arm64 SVE registers"): slice 0 of each register.
inline constexpr uint64_t ZReg(unsigned n, unsigned slice = 0) {
  return kRegArm64 | kU2048 | kSve | (uint64_t(n & 0x1f) << 5) | slice;
}
inline constexpr uint64_t PReg(unsigned n, unsigned slice = 0) {
  return kRegArm64 | kU256 | kSve | 0x400 | (uint64_t(n & 0x1f) << 5) | slice;
}
inline constexpr uint64_t kRegFfr = PReg(16);
inline constexpr uint64_t kRegSveVls = kRegArm64 | kU512 | kSve | 0xffff;
inline constexpr size_t kZBytes = 256;
inline constexpr size_t kPBytes = 32;

// ---- vCPU init (struct kvm_vcpu_init) and features.
struct VcpuInit {
  uint32_t target;
  uint32_t features[7];
};
static_assert(sizeof(VcpuInit) == 32);
inline constexpr uint32_t kTargetGenericV8 = 5;  // KVM_ARM_TARGET_GENERIC_V8
inline constexpr unsigned kFeaturePowerOff = 0;
inline constexpr unsigned kFeatureEl1_32bit = 1;
inline constexpr unsigned kFeaturePsci02 = 2;
inline constexpr unsigned kFeaturePmuV3 = 3;
inline constexpr unsigned kFeatureSve = 4;
inline constexpr unsigned kFeaturePtrauthAddress = 5;
inline constexpr unsigned kFeaturePtrauthGeneric = 6;
inline constexpr unsigned kFeatureHasEl2 = 7;
inline bool HasFeature(const VcpuInit& init, unsigned bit) {
  return (init.features[bit / 32] >> (bit % 32)) & 1;
}

// struct kvm_vcpu_events (arm64).
struct VcpuEvents {
  struct {
    uint8_t serror_pending;
    uint8_t serror_has_esr;
    uint8_t ext_dabt_pending;
    uint8_t pad[5];
    uint64_t serror_esr;
  } exception;
  uint32_t reserved[12];
};
static_assert(sizeof(VcpuEvents) == 64);

// struct kvm_arm_counter_offset (KVM_ARM_SET_COUNTER_OFFSET, Linux 6.4).
struct CounterOffset {
  uint64_t counter_offset;
  uint64_t reserved;
};

// ---- vGICv3 and ITS device attributes (Documentation/virt/kvm/devices/
// arm-vgic-v3.rst and arm-vgic-its.rst).
inline constexpr uint32_t kDevTypeVgicV3 = KVM_DEV_TYPE_ARM_VGIC_V3;
inline constexpr uint32_t kDevTypeIts = KVM_DEV_TYPE_ARM_VGIC_ITS;
inline constexpr uint32_t kGrpAddr = 0;          // KVM_DEV_ARM_VGIC_GRP_ADDR
inline constexpr uint32_t kGrpDistRegs = 1;      // KVM_DEV_ARM_VGIC_GRP_DIST_REGS
inline constexpr uint32_t kGrpNrIrqs = 3;        // KVM_DEV_ARM_VGIC_GRP_NR_IRQS
inline constexpr uint32_t kGrpCtrl = 4;          // KVM_DEV_ARM_VGIC_GRP_CTRL
inline constexpr uint32_t kGrpRedistRegs = 5;    // KVM_DEV_ARM_VGIC_GRP_REDIST_REGS
inline constexpr uint32_t kGrpCpuSysregs = 6;    // KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS
inline constexpr uint32_t kGrpLevelInfo = 7;     // KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO
inline constexpr uint32_t kGrpItsRegs = 8;       // KVM_DEV_ARM_VGIC_GRP_ITS_REGS
inline constexpr uint64_t kAddrDist = 2;         // KVM_VGIC_V3_ADDR_TYPE_DIST
inline constexpr uint64_t kAddrRedist = 3;       // KVM_VGIC_V3_ADDR_TYPE_REDIST
inline constexpr uint64_t kAddrIts = 4;          // KVM_VGIC_ITS_ADDR_TYPE
inline constexpr uint64_t kCtrlInit = 0;         // KVM_DEV_ARM_VGIC_CTRL_INIT
inline constexpr uint64_t kCtrlItsSaveTables = 1;     // KVM_DEV_ARM_ITS_SAVE_TABLES
inline constexpr uint64_t kCtrlItsRestoreTables = 2;  // KVM_DEV_ARM_ITS_RESTORE_TABLES
inline constexpr uint64_t kCtrlSavePendingTables = 3; // KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES
// DIST/REDIST_REGS and CPU_SYSREGS attributes: MPIDR affinity in bits 63..32
// (Aff3.Aff2.Aff1.Aff0, one byte each), the offset or sysreg encoding below.
inline constexpr unsigned kAttrMpidrShift = 32;
inline constexpr uint64_t kAttrOffsetMask = 0xffffffffull;
// LEVEL_INFO: info type in bits 31..10 (0 = line level), first INTID in 9..0.
inline constexpr unsigned kLevelInfoShift = 10;
inline constexpr uint64_t kLevelInfoLineLevel = 0;
inline constexpr uint64_t kLevelIntidMask = 0x3ff;
// The attribute form of an MPIDR_EL1 value: Aff3 (bits 39..32) comes down next
// to Aff2..Aff0 (bits 23..0).
inline constexpr uint64_t MpidrToAttr(uint64_t mpidr) {
  return ((mpidr >> 8) & 0xff000000ull) | (mpidr & 0xffffffull);
}

// The registers a VMM saves and restores, in restore order (as QEMU's
// arm_gicv3_kvm.c and Firecracker's gicv3 module pick them):
// distributor: GICD_CTLR, then per SPI word IGROUPR, ISENABLER, ISPENDR,
// ISACTIVER, IGRPMODR, then IPRIORITYR, ICFGR and the IROUTER halves. Of each
// set/clear pair (ISENABLER/ICENABLER, ...) the set one is listed; the clear
// one is at +0x80.
std::vector<uint32_t> DistRegOffsets(uint32_t nr_irqs);
// Redistributor (RD_base frame, then SGI_base at +0x10000): PROPBASER and
// PENDBASER halves before GICR_CTLR, whose EnableLPIs freezes them.
std::vector<uint32_t> RedistRegOffsets();
// ICC_* encodings: SRE and CTLR first (CTLR carries the priority bits that
// decide which AP0R<n>/AP1R<n> exist), then PMR, BPR0/1, AP0R0-3, AP1R0-3,
// IGRPEN0/1.
std::vector<uint64_t> CpuSysregEncodings();
// GITS_*: IIDR, CBASER (writing it resets CREADR and CWRITER), CWRITER,
// CREADR, BASER0-7, and GITS_CTLR last.
std::vector<uint32_t> ItsRegOffsets();
inline bool IsClearOffset(uint32_t off) {
  const uint32_t f = off & 0xffff;
  return (f >= 0x180 && f < 0x200) || (f >= 0x280 && f < 0x300) || (f >= 0x380 && f < 0x400);
}
inline bool IsSetOffset(uint32_t off) {
  const uint32_t f = off & 0xffff;
  return (f >= 0x100 && f < 0x180) || (f >= 0x200 && f < 0x280) || (f >= 0x300 && f < 0x380);
}

// Every call returns what the ioctl returns: >= 0 on success, -errno on
// failure (the kernel's own convention).
class Device {
 public:
  virtual ~Device() = default;
  virtual int SetAttr(const kvm_device_attr& attr) = 0;  // KVM_SET_DEVICE_ATTR
  virtual int GetAttr(const kvm_device_attr& attr) = 0;  // KVM_GET_DEVICE_ATTR
  virtual int HasAttr(const kvm_device_attr& attr) = 0;  // KVM_HAS_DEVICE_ATTR
};

class Vm {
 public:
  virtual ~Vm() = default;
  // KVM_CREATE_DEVICE; on success *out is the device.
  virtual int CreateDevice(uint32_t type, std::unique_ptr<Device>* out) = 0;
  virtual int SetCounterOffset(const CounterOffset& off) = 0;  // KVM_ARM_SET_COUNTER_OFFSET
};

class Vcpu {
 public:
  virtual ~Vcpu() = default;
  virtual int Init(const VcpuInit& init) = 0;            // KVM_ARM_VCPU_INIT
  virtual int Finalize(int feature) = 0;                 // KVM_ARM_VCPU_FINALIZE
  // KVM_GET_REG_LIST: *n is the room in `ids` on entry and the number of
  // registers on return; -E2BIG (with *n set) when the room is too small.
  virtual int GetRegList(uint64_t* n, uint64_t* ids) = 0;
  virtual int GetOneReg(const kvm_one_reg& reg) = 0;     // KVM_GET_ONE_REG
  virtual int SetOneReg(const kvm_one_reg& reg) = 0;     // KVM_SET_ONE_REG
  virtual int GetMpState(kvm_mp_state* state) = 0;       // KVM_GET_MP_STATE
  virtual int SetMpState(const kvm_mp_state& state) = 0;
  virtual int GetEvents(VcpuEvents* events) = 0;         // KVM_GET_VCPU_EVENTS
  virtual int SetEvents(const VcpuEvents& events) = 0;   // KVM_SET_VCPU_EVENTS
};

// Real implementations over a VM fd / a vCPU fd. They compile on every host;
// the calls whose structs are arm64's work only on aarch64 (elsewhere they
// return -ENOSYS). Neither takes ownership of the fd.
std::unique_ptr<Vm> NewIoctlVm(int vm_fd);
std::unique_ptr<Vcpu> NewIoctlVcpu(int vcpu_fd);
// A device fd (from KVM_CREATE_DEVICE); takes ownership of it.
std::unique_ptr<Device> NewIoctlDevice(int device_fd);

}  // namespace vmsnap::kvm::arm64
