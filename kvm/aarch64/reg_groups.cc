// SPDX-License-Identifier: MIT
// The arm64 register groups: see reg_groups.h.
#include "kvm/aarch64/reg_groups.h"

namespace vmsnap::kvm::arm64 {

RegSlot ClassifyReg(uint64_t id, bool sve) {
  const uint64_t cls = Coproc(id);
  const uint64_t low = id & 0xffff;
  const size_t size = OneRegSize(id);
  for (const FieldReg& r : kCoreScalars) {
    if (r.id == id) return {RegGroup::kCoreScalar, 0, r.field};
  }
  for (const FieldReg& r : kFpScalars) {
    if (r.id == id) return {RegGroup::kFpScalar, 0, r.field};
  }
  for (const FieldReg& r : kTimerRegs) {
    if (r.id == id) return {RegGroup::kTimer, 0, r.field};
  }
  if (cls == kCore) {
    // The index counts 32-bit words of struct kvm_regs (arm64.h).
    const uint64_t off = low * 4;
    if (size == 8 && off < 248) return {RegGroup::kCoreX, static_cast<unsigned>(off / 8)};
    if (size == 8 && off >= 288 && off < 288 + 8 * kNrSpsr) return {RegGroup::kSpsr, static_cast<unsigned>((off - 288) / 8)};
    if (size == 16 && off >= 336 && off < 848 && !sve) return {RegGroup::kV, static_cast<unsigned>((off - 336) / 16)};
    return {RegGroup::kOther};
  }
  if (cls == kSve && sve) {
    if (id == kRegSveVls) return {RegGroup::kSveVls};
    if ((id & 0x1f) != 0) return {RegGroup::kOther};  // slices beyond the first
    if (low < 0x400) return {RegGroup::kZ, static_cast<unsigned>((low >> 5) & 0x1f)};
    if (id == kRegFfr) return {RegGroup::kFfr};
    return {RegGroup::kP, static_cast<unsigned>((low >> 5) & 0xf)};
  }
  if (cls == kSysreg && size == 8) return {RegGroup::kSysreg};
  if ((cls == kFw || cls == kFwFeatBmap) && size == 8) return {RegGroup::kFirmware};
  return {RegGroup::kOther};
}

}  // namespace vmsnap::kvm::arm64
