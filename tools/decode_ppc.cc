// SPDX-License-Identifier: MIT
// ppc64 HPTE decoder.
//
// Layout (Power ISA v2.07 Book III, 5.7.7.1 "Page Table Entry"; the format the
// kernel's HTAB fd streams, arch/powerpc/include/asm/book3s/64/mmu-hash.h),
// bits numbered here from the least significant:
//   first doubleword (v):  63-62 B (segment size: 0 256 MiB, 1 1 TiB),
//                          56-7 AVPN (abbreviated virtual page number),
//                          6-3 software bits (Linux: 0x10 bolted; KVM uses
//                          0x40 HVLOCK and 0x20 ABSENT), 2 L (large page),
//                          1 H (secondary hash), 0 V (valid).
//   second doubleword (r): 63 PP0, 62 TS, 61-60 key high bits,
//                          59-12 RPN (real page number), 11-9 key low bits,
//                          8 R (referenced), 7 C (changed), 6-3 WIMG,
//                          2 N (no-execute), 1-0 PP.
// Page size: without L the page is 4 KiB. With L, the low RPN bits (r bits
// 12-19, "LP") encode the base page size (of the segment) and the actual page
// size; we decode the encodings KVM book3s HV accepts (kvmppc_hpte_page_shifts
// in arch/powerpc/include/asm/kvm_book3s_64.h): LP low nibble 0 -> 16 MiB,
// 1 -> 64 KiB, 3 -> 16 GiB, 7 -> 64 KiB in a 4 KiB segment, 8 with high
// nibble 0 -> 16 MiB in a 64 KiB segment, 8 with high nibble 3 -> 16 MiB in a
// 4 KiB segment. Anything else is reported as an unknown encoding (size 0).
#include "tools/decode_ppc.h"

#include "tools/state_json.h"

namespace vmsnap::tools {
namespace {

struct PageShifts {
  int base = 0;    // 0: unknown encoding
  int actual = 0;
};

PageShifts Shifts(uint64_t v, uint64_t r) {
  if (!(v & 0x4)) return {12, 12};
  unsigned lp_lo = (r >> 12) & 0xf;
  unsigned lp_hi = (r >> 16) & 0xf;
  switch (lp_lo) {
    case 0: return lp_hi == 0 ? PageShifts{24, 24} : PageShifts{};
    case 1: return {16, 16};
    case 3: return lp_hi == 0 ? PageShifts{34, 34} : PageShifts{};
    case 7: return {12, 16};
    case 8:
      if (lp_hi == 0) return {16, 24};
      if (lp_hi == 3) return {12, 24};
      return {};
    default: return {};
  }
}

}  // namespace

void DecodeHpte(uint64_t v, uint64_t r, nlohmann::ordered_json& out) {
  out["valid"] = (v & 0x1) != 0;
  out["secondary"] = (v & 0x2) != 0;
  out["large"] = (v & 0x4) != 0;
  out["bolted"] = (v & 0x10) != 0;
  out["segment_size"] = (v >> 62) == 0 ? "256M" : (v >> 62) == 1 ? "1T" : "reserved";
  out["avpn"] = Hex((v & 0x3fffffffffffff80ull) >> 7);
  PageShifts s = Shifts(v, r);
  out["base_page_size"] = s.base ? (uint64_t{1} << s.base) : 0;
  out["actual_page_size"] = s.actual ? (uint64_t{1} << s.actual) : 0;
  // The RPN field's low bits double as LP for large pages; the real address
  // of the page keeps only the bits above the actual page size.
  uint64_t rpn_field = r & 0x0ffffffffffff000ull;
  uint64_t real = s.actual ? rpn_field & ~((uint64_t{1} << s.actual) - 1) : rpn_field;
  out["rpn"] = Hex(real >> 12);
  out["real_address"] = Hex(real);
  out["pp"] = Hex(((r >> 63) << 2) | (r & 3));
  out["n"] = (r & 0x4) != 0;
  out["wimg"] = Hex((r >> 3) & 0xf);
  out["key"] = Hex(((r >> 60) & 3) << 3 | ((r >> 9) & 7));
  out["referenced"] = (r & 0x100) != 0;
  out["changed"] = (r & 0x80) != 0;
}

}  // namespace vmsnap::tools
