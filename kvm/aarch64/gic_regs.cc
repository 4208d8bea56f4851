// SPDX-License-Identifier: MIT
// The vGICv3 and ITS registers a VMM saves, in the order it restores them.
#include "kvm/aarch64/arm64.h"

namespace vmsnap::kvm::arm64 {

std::vector<uint32_t> DistRegOffsets(uint32_t nr_irqs) {
  std::vector<uint32_t> o{0x0};  // GICD_CTLR
  for (uint32_t w = 1; w < nr_irqs / 32; ++w) {
    for (uint32_t base : {0x80u, 0x100u, 0x200u, 0x300u, 0xd00u}) o.push_back(base + 4 * w);
  }
  for (uint32_t i = 8; i < nr_irqs / 4; ++i) o.push_back(0x400 + 4 * i);   // IPRIORITYR (SPIs)
  for (uint32_t i = 2; i < nr_irqs / 16; ++i) o.push_back(0xc00 + 4 * i);  // ICFGR (SPIs)
  for (uint32_t n = 32; n < nr_irqs; ++n) {                                // IROUTER<n>
    o.push_back(0x6000 + 8 * n);
    o.push_back(0x6000 + 8 * n + 4);
  }
  return o;
}

std::vector<uint32_t> RedistRegOffsets() {
  std::vector<uint32_t> o{0x70, 0x74, 0x78, 0x7c, 0x0};  // PROPBASER, PENDBASER, GICR_CTLR
  for (uint32_t off : {0x10080u, 0x10100u, 0x10200u, 0x10300u, 0x10c00u, 0x10c04u, 0x10d00u}) {
    o.push_back(off);  // IGROUPR0, ISENABLER0, ISPENDR0, ISACTIVER0, ICFGR0/1, IGRPMODR0
  }
  for (uint32_t i = 0; i < 8; ++i) o.push_back(0x10400 + 4 * i);  // IPRIORITYR0-7
  return o;
}

std::vector<uint64_t> CpuSysregEncodings() {
  auto enc = [](unsigned op0, unsigned op1, unsigned crn, unsigned crm, unsigned op2) {
    return SysReg(op0, op1, crn, crm, op2) & kSysregEncodingMask;
  };
  std::vector<uint64_t> o{enc(3, 0, 12, 12, 5), enc(3, 0, 12, 12, 4), enc(3, 0, 4, 6, 0),
                          enc(3, 0, 12, 8, 3), enc(3, 0, 12, 12, 3)};  // SRE, CTLR, PMR, BPR0, BPR1
  for (unsigned n = 0; n < 4; ++n) o.push_back(enc(3, 0, 12, 8, 4 + n));  // AP0R<n>
  for (unsigned n = 0; n < 4; ++n) o.push_back(enc(3, 0, 12, 9, n));      // AP1R<n>
  o.push_back(enc(3, 0, 12, 12, 6));  // IGRPEN0
  o.push_back(enc(3, 0, 12, 12, 7));  // IGRPEN1
  return o;
}

std::vector<uint32_t> ItsRegOffsets() {
  std::vector<uint32_t> o{0x4, 0x80, 0x88, 0x90};  // IIDR, CBASER, CWRITER, CREADR
  for (uint32_t n = 0; n < 8; ++n) o.push_back(0x100 + 8 * n);  // BASER<n>
  o.push_back(0x0);  // GITS_CTLR
  return o;
}

}  // namespace vmsnap::kvm::arm64
