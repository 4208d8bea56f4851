// SPDX-License-Identifier: MIT
// ppc64 (book3s HV) KVM interface: the hashed page table fd, HPT allocation and
// the vCPU register calls, behind abstract classes so capture/restore run the
// same against real KVM (on a POWER host) and the kernel model
// (tests/model/kernel/ppc64_model.h).
#pragma once

#include <linux/kvm.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace vmsnap::kvm::ppc {

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

// These structs live in arch/powerpc/include/uapi/asm/kvm.h, which other hosts
// lack: mirrored here and checked against the real header when compiled for
// powerpc64 (ppc64_ioctl.cc).
struct HtabFdArgs {  // struct kvm_get_htab_fd
  uint64_t flags;
  uint64_t start_index;
  uint64_t reserved[2];
};
// Record header of the HTAB stream; host-endian. Followed by n_valid HPTEs of
// two big-endian doublewords each; then n_invalid entries that are implied.
struct HtabHeader {  // struct kvm_get_htab_header
  uint32_t index;
  uint16_t n_valid;
  uint16_t n_invalid;
};
static_assert(sizeof(HtabHeader) == 8);

inline constexpr uint64_t kHtabBoltedOnly = 0x1;  // KVM_GET_HTAB_BOLTED_ONLY
inline constexpr uint64_t kHtabWrite = 0x2;       // KVM_GET_HTAB_WRITE
inline constexpr size_t kHpteSize = 16;
inline constexpr uint32_t kMinHptOrder = 18;  // PPC_MIN_HPT_ORDER
inline constexpr uint32_t kMaxHptOrder = 46;  // PPC_MAX_HPT_ORDER

// HPTE bits (arch/powerpc/include/asm/book3s/64/mmu-hash.h, "old" pre-ISA3.0
// format, which is what the HTAB fd carries).
inline constexpr uint64_t kHpteVValid = 0x1;
inline constexpr uint64_t kHpteVSecondary = 0x2;
inline constexpr uint64_t kHpteVLarge = 0x4;
inline constexpr uint64_t kHpteVBolted = 0x10;
inline constexpr uint64_t kHpteVAbsent = 0x20;
// The host's lock bit: the kernel reads each HPTE for the stream while holding
// it, so read streams carry it; it is not guest state.
inline constexpr uint64_t kHpteVHvlock = 0x40;
inline constexpr uint64_t kHpteVAvpn = 0x3fffffffffffff80ull;
inline constexpr uint64_t kHpteVSsizeShift = 62;
inline constexpr uint64_t kHpteRPp0 = 0x8000000000000000ull;
inline constexpr uint64_t kHpteRRpn = 0x0ffffffffffff000ull;
inline constexpr uint64_t kHpteRR = 0x100;
inline constexpr uint64_t kHpteRC = 0x80;
inline constexpr uint64_t kHpteRWimg = 0x78;
inline constexpr uint64_t kHpteRN = 0x4;
inline constexpr uint64_t kHpteRPp = 0x3;
// Kept by the kernel in its guest view of the second doubleword (revmap
// guest_rpte): the entry changed since a read fd last returned it.
inline constexpr uint64_t kHpteGrModified = 1ull << 62;

struct Regs {  // struct kvm_regs (powerpc)
  uint64_t pc, cr, ctr, lr, xer, msr, srr0, srr1, pid;
  uint64_t sprg0, sprg1, sprg2, sprg3, sprg4, sprg5, sprg6, sprg7;
  uint64_t gpr[32];
};
static_assert(sizeof(Regs) == 392);

struct SlbEntry {
  uint64_t slbe;
  uint64_t slbv;
};
inline constexpr uint64_t kSlbEsidValid = 0x08000000;  // SLB_ESID_V
inline constexpr int kSlbEntries = 64;

struct Sregs {  // struct kvm_sregs (powerpc); only the book3s-64 part is named
  uint32_t pvr;
  union {
    struct {
      uint64_t sdr1;
      SlbEntry slb[kSlbEntries];
    } s;
    uint8_t raw[1224];  // the union also holds the ppc32 and BookE layouts
  } u;
};
static_assert(sizeof(Sregs) == 1232);

// The read or write fd that KVM_PPC_GET_HTAB_FD returns.
class HtabFile {
 public:
  virtual ~HtabFile() = default;
  // As read(2)/write(2): bytes transferred, or -errno.
  virtual ssize_t Read(void* buf, size_t len) = 0;
  virtual ssize_t Write(const void* buf, size_t len) = 0;
};

// Each call returns what the ioctl returns: >= 0 on success, -errno on failure.
class Vm {
 public:
  virtual ~Vm() = default;
  // KVM_PPC_GET_HTAB_FD; on success *out is the new fd.
  virtual int GetHtabFd(const HtabFdArgs& args, std::unique_ptr<HtabFile>* out) = 0;
  // KVM_PPC_ALLOCATE_HTAB: (re)allocates and clears the HPT with 2^*order
  // bytes (0: the kernel's default), and returns the order used in *order.
  virtual int AllocateHtab(uint32_t* order) = 0;
};

class Vcpu {
 public:
  virtual ~Vcpu() = default;
  virtual int GetRegs(Regs* regs) = 0;         // KVM_GET_REGS
  virtual int SetRegs(const Regs& regs) = 0;   // KVM_SET_REGS
  virtual int GetSregs(Sregs* sregs) = 0;      // KVM_GET_SREGS
  virtual int SetSregs(const Sregs& sregs) = 0;
  virtual int GetOneReg(const kvm_one_reg& reg) = 0;  // KVM_GET_ONE_REG
  virtual int SetOneReg(const kvm_one_reg& reg) = 0;
  virtual int GetMpState(kvm_mp_state* state) = 0;    // KVM_GET_MP_STATE
  virtual int SetMpState(const kvm_mp_state& state) = 0;
};

// Real implementations over a VM fd / a vCPU fd. They compile on every host;
// the calls whose structs are powerpc's work only on powerpc64 (elsewhere
// they return -ENOSYS). Neither takes ownership of the fd.
std::unique_ptr<Vm> NewIoctlVm(int vm_fd);
std::unique_ptr<Vcpu> NewIoctlVcpu(int vcpu_fd);

// ONE_REG ids of the SPRs and register files a book3s HV resume needs
// (arch/powerpc/include/uapi/asm/kvm.h), as QEMU's kvm_arch_get_registers and
// its spapr SPR list save them.
struct OneRegDef {
  uint64_t id;
  const char* name;
};
inline constexpr uint64_t kRegPpc = KVM_REG_PPC;
inline constexpr uint64_t kU32 = KVM_REG_SIZE_U32;
inline constexpr uint64_t kU64 = KVM_REG_SIZE_U64;
inline constexpr uint64_t kU128 = KVM_REG_SIZE_U128;
inline constexpr uint64_t kRegFpr0 = kRegPpc | kU64 | 0x20;   // KVM_REG_PPC_FPR(n), 0..31
inline constexpr uint64_t kRegVr0 = kRegPpc | kU128 | 0x40;   // KVM_REG_PPC_VR(n), 0..31
inline constexpr uint64_t kRegVsr0 = kRegPpc | kU128 | 0x60;  // KVM_REG_PPC_VSR(n), 0..31
inline constexpr OneRegDef kSprs[] = {
    {kRegPpc | kU64 | 0x9, "dscr"},
    {kRegPpc | kU64 | 0xa, "purr"},
    {kRegPpc | kU64 | 0xb, "spurr"},
    {kRegPpc | kU64 | 0xc, "dar"},
    {kRegPpc | kU32 | 0xd, "dsisr"},
    {kRegPpc | kU64 | 0xe, "amr"},
    {kRegPpc | kU64 | 0xf, "uamor"},
    {kRegPpc | kU64 | 0x10, "mmcr0"},
    {kRegPpc | kU64 | 0x11, "mmcr1"},
    {kRegPpc | kU64 | 0x12, "mmcra"},
    {kRegPpc | kU64 | 0x15, "siar"},
    {kRegPpc | kU64 | 0x16, "sdar"},
    {kRegPpc | kU64 | 0x17, "sier"},
    {kRegPpc | kU32 | 0x18, "pmc1"},
    {kRegPpc | kU32 | 0x19, "pmc2"},
    {kRegPpc | kU32 | 0x1a, "pmc3"},
    {kRegPpc | kU32 | 0x1b, "pmc4"},
    {kRegPpc | kU32 | 0x1c, "pmc5"},
    {kRegPpc | kU32 | 0x1d, "pmc6"},
    {kRegPpc | kU64 | 0x80, "fpscr"},
    {kRegPpc | kU32 | 0x81, "vscr"},
    {kRegPpc | kU64 | 0x82, "vpa_addr"},
    {kRegPpc | kU128 | 0x83, "vpa_slb"},
    {kRegPpc | kU128 | 0x84, "vpa_dtl"},
    {kRegPpc | kU64 | 0x9c, "tb_offset"},
    {kRegPpc | kU64 | 0x9f, "iamr"},
    {kRegPpc | kU64 | 0xa3, "fscr"},
    {kRegPpc | kU32 | 0xa4, "pspb"},
    {kRegPpc | kU64 | 0xa5, "ebbhr"},
    {kRegPpc | kU64 | 0xa6, "ebbrr"},
    {kRegPpc | kU64 | 0xa7, "bescr"},
    {kRegPpc | kU64 | 0xa8, "tar"},
    {kRegPpc | kU64 | 0xad, "ic"},
    {kRegPpc | kU64 | 0xaa, "dawr"},
    {kRegPpc | kU64 | 0xab, "dawrx"},
    {kRegPpc | kU64 | 0xac, "ciabr"},
    {kRegPpc | kU64 | 0xae, "vtb"},
    {kRegPpc | kU32 | 0xb4, "vrsave"},
    {kRegPpc | kU64 | 0xb5, "lpcr_64"},
    {kRegPpc | kU64 | 0xb6, "ppr"},
    {kRegPpc | kU32 | 0xb7, "arch_compat"},
    {kRegPpc | kU64 | 0xba, "sprg9"},
    {kRegPpc | kU64 | 0xbc, "tidr"},
    {kRegPpc | kU64 | 0xbd, "psscr"},
    {kRegPpc | kU64 | 0xbe, "dec_expiry"},
};

// Size in bytes encoded in a ONE_REG id.
inline size_t OneRegSize(uint64_t id) {
  return size_t{1} << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT);
}

}  // namespace vmsnap::kvm::ppc
