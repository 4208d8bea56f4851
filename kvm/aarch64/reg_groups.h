// SPDX-License-Identifier: MIT
// The arm64 vCPU register groups, described once for capture and restore:
// which group (and which slot of the manifest's aarch64 Vcpu) each id that
// KVM_GET_REG_LIST names belongs to, the named scalar registers of each
// group, and the order restore writes the groups in.
#pragma once

#include <cstdint>

#include "kvm/aarch64/arm64.h"

namespace vmsnap::kvm::arm64 {

// Each group is one place in schemas/aarch64.capnp's Vcpu.
enum class RegGroup : uint8_t {
  kCoreX,       // core.x[index]
  kCoreScalar,  // core.spEl0 .. core.elrEl1 (kCoreScalars)
  kSpsr,        // core.spsr[index]
  kV,           // fp.v[index], on a vCPU without SVE (with SVE, Z holds them)
  kFpScalar,    // fp.fpsr, fp.fpcr (kFpScalars)
  kSveVls,      // sve.vls: written with the vCPU's init, before FINALIZE
  kZ,           // sve.z[index], slice 0
  kP,           // sve.p[index], slice 0
  kFfr,         // sve.ffr, slice 0
  kSysreg,      // sysregs, by id (every system register but the timers)
  kFirmware,    // firmware, by id (KVM_REG_ARM_FW*, the feature bitmaps)
  kOther,       // otherRegs, by id, as bytes (CCSIDR demux, SVE slices > 0, ...)
  kTimer,       // timer.cnt .. timer.pctl (kTimerRegs)
};

// A register kept in a field of its own, named as KVM's headers name it.
enum class RegField : uint8_t {
  kSpEl0, kPc, kPstate, kSpEl1, kElrEl1,  // core
  kFpsr, kFpcr,                           // fp
  kCnt, kCval, kCtl, kPcnt, kPcval, kPctl,  // timer
};
struct FieldReg {
  uint64_t id;
  const char* name;
  RegField field;
};

inline constexpr FieldReg kCoreScalars[] = {
    {kRegSp, "SP_EL0", RegField::kSpEl0},       {kRegPc, "PC", RegField::kPc},
    {kRegPstate, "PSTATE", RegField::kPstate},  {kRegSpEl1, "SP_EL1", RegField::kSpEl1},
    {kRegElrEl1, "ELR_EL1", RegField::kElrEl1},
};
inline constexpr FieldReg kFpScalars[] = {
    {kRegFpsr, "FPSR", RegField::kFpsr},
    {kRegFpcr, "FPCR", RegField::kFpcr},
};
// In the order restore writes them (docs/state-coverage.md, "aarch64", step
// 5): each timer's count first, since TIMER_CNT sets the counter offset that
// its compare value is measured against, then the compare value, then the
// control register, so the timer is enabled only once both are in place. The
// physical timer's three only where the snapshot has them (timer.hasPtimer).
inline constexpr FieldReg kTimerRegs[] = {
    {kTimerCnt, "KVM_REG_ARM_TIMER_CNT", RegField::kCnt},
    {kTimerCval, "KVM_REG_ARM_TIMER_CVAL", RegField::kCval},
    {kTimerCtl, "KVM_REG_ARM_TIMER_CTL", RegField::kCtl},
    {kPtimerCnt, "KVM_REG_ARM_PTIMER_CNT", RegField::kPcnt},
    {kPtimerCval, "KVM_REG_ARM_PTIMER_CVAL", RegField::kPcval},
    {kPtimerCtl, "KVM_REG_ARM_PTIMER_CTL", RegField::kPctl},
};
inline constexpr bool IsPtimerField(RegField f) { return f >= RegField::kPcnt; }

// The order restore writes the groups in (kSveVls is not here: it belongs to
// the vCPU's init). The timers come last, after every system register the
// timer's state could depend on.
inline constexpr RegGroup kRestoreOrder[] = {
    RegGroup::kCoreX, RegGroup::kCoreScalar, RegGroup::kSpsr,    RegGroup::kV,
    RegGroup::kFpScalar, RegGroup::kZ,       RegGroup::kP,       RegGroup::kFfr,
    RegGroup::kSysreg, RegGroup::kFirmware,  RegGroup::kOther,   RegGroup::kTimer,
};

struct RegSlot {
  RegGroup group;
  unsigned index = 0;            // X, SPSR, V, Z or P number
  RegField field = RegField{};   // kCoreScalar, kFpScalar, kTimer
};

// Where capture keeps a register KVM_GET_REG_LIST named on a vCPU with (or
// without) SVE.
RegSlot ClassifyReg(uint64_t id, bool sve);

}  // namespace vmsnap::kvm::arm64
