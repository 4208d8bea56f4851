// SPDX-License-Identifier: MIT
// arm64 register names. System registers are named by their encoding
// (op0, op1, CRn, CRm, op2) as the Arm ARM lists them; the ids follow
// Documentation/virt/kvm/api.rst ("KVM_SET_ONE_REG", arm64), including its
// note that KVM_REG_ARM_TIMER_CNT and _CVAL carry each other's encodings.
#include "tools/decode_arm64.h"

#include <cstdio>

#include "kvm/aarch64/arm64.h"
#include "tools/state_json.h"

namespace vmsnap::tools {
namespace ka = kvm::arm64;
namespace {

struct Named {
  uint64_t id;
  const char* name;
};

const Named kSysregs[] = {
    {ka::SysReg(2, 0, 0, 2, 2), "MDSCR_EL1"},
    {ka::SysReg(3, 0, 0, 0, 0), "MIDR_EL1"},
    {ka::SysReg(3, 0, 0, 0, 5), "MPIDR_EL1"},
    {ka::SysReg(3, 0, 0, 0, 6), "REVIDR_EL1"},
    {ka::SysReg(3, 0, 0, 4, 0), "ID_AA64PFR0_EL1"},
    {ka::SysReg(3, 0, 0, 4, 1), "ID_AA64PFR1_EL1"},
    {ka::SysReg(3, 0, 0, 5, 0), "ID_AA64DFR0_EL1"},
    {ka::SysReg(3, 0, 0, 6, 0), "ID_AA64ISAR0_EL1"},
    {ka::SysReg(3, 0, 0, 6, 1), "ID_AA64ISAR1_EL1"},
    {ka::SysReg(3, 0, 0, 7, 0), "ID_AA64MMFR0_EL1"},
    {ka::SysReg(3, 0, 0, 7, 1), "ID_AA64MMFR1_EL1"},
    {ka::SysReg(3, 0, 0, 7, 2), "ID_AA64MMFR2_EL1"},
    {ka::SysReg(3, 0, 1, 0, 0), "SCTLR_EL1"},
    {ka::SysReg(3, 0, 1, 0, 1), "ACTLR_EL1"},
    {ka::SysReg(3, 0, 1, 0, 2), "CPACR_EL1"},
    {ka::SysReg(3, 0, 1, 2, 0), "ZCR_EL1"},
    {ka::SysReg(3, 0, 2, 0, 0), "TTBR0_EL1"},
    {ka::SysReg(3, 0, 2, 0, 1), "TTBR1_EL1"},
    {ka::SysReg(3, 0, 2, 0, 2), "TCR_EL1"},
    {ka::SysReg(3, 0, 2, 1, 0), "APIAKEYLO_EL1"},
    {ka::SysReg(3, 0, 2, 1, 1), "APIAKEYHI_EL1"},
    {ka::SysReg(3, 0, 5, 1, 0), "AFSR0_EL1"},
    {ka::SysReg(3, 0, 5, 1, 1), "AFSR1_EL1"},
    {ka::SysReg(3, 0, 5, 2, 0), "ESR_EL1"},
    {ka::SysReg(3, 0, 6, 0, 0), "FAR_EL1"},
    {ka::SysReg(3, 0, 7, 4, 0), "PAR_EL1"},
    {ka::SysReg(3, 0, 9, 14, 1), "PMINTENSET_EL1"},
    {ka::SysReg(3, 0, 10, 2, 0), "MAIR_EL1"},
    {ka::SysReg(3, 0, 10, 3, 0), "AMAIR_EL1"},
    {ka::SysReg(3, 0, 12, 0, 0), "VBAR_EL1"},
    {ka::SysReg(3, 0, 13, 0, 1), "CONTEXTIDR_EL1"},
    {ka::SysReg(3, 0, 13, 0, 4), "TPIDR_EL1"},
    {ka::SysReg(3, 0, 14, 1, 0), "CNTKCTL_EL1"},
    {ka::SysReg(3, 2, 0, 0, 0), "CSSELR_EL1"},
    {ka::SysReg(3, 3, 9, 12, 0), "PMCR_EL0"},
    {ka::SysReg(3, 3, 13, 0, 2), "TPIDR_EL0"},
    {ka::SysReg(3, 3, 13, 0, 3), "TPIDRRO_EL0"},
    {ka::SysReg(3, 3, 14, 0, 0), "CNTFRQ_EL0"},
    // The timer ids, by what they access (not by the encoding they carry).
    {ka::kTimerCtl, "CNTV_CTL_EL0"},
    {ka::kTimerCnt, "CNTVCT_EL0"},
    {ka::kTimerCval, "CNTV_CVAL_EL0"},
    {ka::kPtimerCtl, "CNTP_CTL_EL0"},
    {ka::kPtimerCnt, "CNTPCT_EL0"},
    {ka::kPtimerCval, "CNTP_CVAL_EL0"},
    // vGICv3 CPU interface (as CPU_SYSREGS attributes carry them).
    {ka::SysReg(3, 0, 4, 6, 0), "ICC_PMR_EL1"},
    {ka::SysReg(3, 0, 12, 8, 3), "ICC_BPR0_EL1"},
    {ka::SysReg(3, 0, 12, 8, 4), "ICC_AP0R0_EL1"},
    {ka::SysReg(3, 0, 12, 8, 5), "ICC_AP0R1_EL1"},
    {ka::SysReg(3, 0, 12, 8, 6), "ICC_AP0R2_EL1"},
    {ka::SysReg(3, 0, 12, 8, 7), "ICC_AP0R3_EL1"},
    {ka::SysReg(3, 0, 12, 9, 0), "ICC_AP1R0_EL1"},
    {ka::SysReg(3, 0, 12, 9, 1), "ICC_AP1R1_EL1"},
    {ka::SysReg(3, 0, 12, 9, 2), "ICC_AP1R2_EL1"},
    {ka::SysReg(3, 0, 12, 9, 3), "ICC_AP1R3_EL1"},
    {ka::SysReg(3, 0, 12, 12, 3), "ICC_BPR1_EL1"},
    {ka::SysReg(3, 0, 12, 12, 4), "ICC_CTLR_EL1"},
    {ka::SysReg(3, 0, 12, 12, 5), "ICC_SRE_EL1"},
    {ka::SysReg(3, 0, 12, 12, 6), "ICC_IGRPEN0_EL1"},
    {ka::SysReg(3, 0, 12, 12, 7), "ICC_IGRPEN1_EL1"},
};

const Named kFirmware[] = {
    {ka::kFwPsciVersion, "PSCI_VERSION"},
    {ka::kFwSmcccWorkaround1, "SMCCC_ARCH_WORKAROUND_1"},
    {ka::kFwSmcccWorkaround2, "SMCCC_ARCH_WORKAROUND_2"},
    {ka::kFwSmcccWorkaround3, "SMCCC_ARCH_WORKAROUND_3"},
    {ka::FwBmapReg(0), "STD_BMAP"},
    {ka::FwBmapReg(1), "STD_HYP_BMAP"},
    {ka::FwBmapReg(2), "VENDOR_HYP_BMAP"},
};

std::string CoreName(uint64_t id) {
  const uint64_t off = (id & 0xffff) * 4;
  const size_t size = ka::OneRegSize(id);
  if (size == 8 && off < 248 && off % 8 == 0) return "X" + std::to_string(off / 8);
  if (id == ka::kRegSp) return "SP_EL0";
  if (id == ka::kRegPc) return "PC";
  if (id == ka::kRegPstate) return "PSTATE";
  if (id == ka::kRegSpEl1) return "SP_EL1";
  if (id == ka::kRegElrEl1) return "ELR_EL1";
  static const char* const kSpsr[] = {"SPSR_EL1", "SPSR_ABT", "SPSR_UND", "SPSR_IRQ", "SPSR_FIQ"};
  if (size == 8 && off >= 288 && off < 328 && off % 8 == 0) return kSpsr[(off - 288) / 8];
  if (size == 16 && off >= 336 && off < 848 && off % 16 == 0) return "V" + std::to_string((off - 336) / 16);
  if (id == ka::kRegFpsr) return "FPSR";
  if (id == ka::kRegFpcr) return "FPCR";
  return "";
}

}  // namespace

std::string Arm64RegName(uint64_t id) {
  // Sysreg encodings alone (vGIC CPU_SYSREGS) are looked up as full ids.
  if (id <= ka::kSysregEncodingMask) id = ka::kRegArm64 | ka::kU64 | ka::kSysreg | id;
  const uint64_t cls = ka::Coproc(id);
  if ((id & ka::kRegArchMask) == ka::kRegArm64) {
    if (cls == ka::kCore) {
      std::string n = CoreName(id);
      if (!n.empty()) return n;
    } else if (cls == ka::kSysreg) {
      for (const Named& e : kSysregs) {
        if (e.id == id) return e.name;
      }
      char buf[40];
      std::snprintf(buf, sizeof buf, "S%u_%u_C%u_C%u_%u", unsigned((id >> 14) & 3), unsigned((id >> 11) & 7),
                    unsigned((id >> 7) & 15), unsigned((id >> 3) & 15), unsigned(id & 7));
      return buf;
    } else if (cls == ka::kFw || cls == ka::kFwFeatBmap) {
      for (const Named& e : kFirmware) {
        if (e.id == id) return e.name;
      }
    } else if (cls == ka::kSve) {
      const uint64_t low = id & 0xffff;
      const std::string slice = (id & 0x1f) ? "[" + std::to_string(id & 0x1f) + "]" : "";
      if (id == ka::kRegSveVls) return "SVE_VLS";
      if (low < 0x400) return "Z" + std::to_string((low >> 5) & 0x1f) + slice;
      if (((low >> 5) & 0x1f) == 16) return "FFR" + slice;
      return "P" + std::to_string((low >> 5) & 0xf) + slice;
    } else if (cls == ka::kDemux && ((id >> 8) & 0xff) == 0) {
      return "CCSIDR[" + std::to_string(id & 0xff) + "]";
    }
  }
  return Hex(id);
}

nlohmann::ordered_json Arm64Features(const uint32_t* words, unsigned n) {
  static const char* const kNames[] = {"POWER_OFF",       "EL1_32BIT",       "PSCI_0_2", "PMU_V3",
                                       "SVE",             "PTRAUTH_ADDRESS", "PTRAUTH_GENERIC",
                                       "HAS_EL2"};
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (unsigned w = 0; w < n; ++w) {
    for (unsigned b = 0; b < 32; ++b) {
      if (!((words[w] >> b) & 1)) continue;
      const unsigned bit = w * 32 + b;
      out.push_back(bit < std::size(kNames) ? std::string(kNames[bit]) : "bit " + std::to_string(bit));
    }
  }
  return out;
}

}  // namespace vmsnap::tools
