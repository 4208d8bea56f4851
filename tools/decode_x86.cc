// SPDX-License-Identifier: MIT
// XSAVE area and local APIC page decoders.
//
// XSAVE (Intel SDM vol. 1, 10.5.1 "FXSAVE area" and 13.4-13.5 "XSAVE area"):
//   legacy region, bytes 0-511 (64-bit FXSAVE layout, which the kernel uses):
//     0 FCW (16 bits), 2 FSW (16), 4 FTW in abridged form (8: one valid bit per
//     register), 6 FOP (16), 8 FIP (64), 16 FDP (64), 24 MXCSR (32),
//     28 MXCSR_MASK (32), 32 + 16*i ST(i)/MM(i) (80 bits used of 128),
//     160 + 16*i XMM(i) for i = 0..15.
//   XSAVE header, bytes 512-575: 512 XSTATE_BV (64), 520 XCOMP_BV (64).
//   AVX component (state component 2) at its standard offset 576: the upper
//     128 bits of YMM0..YMM15, 16 bytes each. When XSTATE_BV bit 2 is clear
//     the component is in its initial configuration (upper halves zero) and
//     its bytes in memory are not meaningful, so we report zeros.
//   In the compacted format (XCOMP_BV bit 63) the AVX component, when present,
//     is the first extended component and so also starts at 576.
//
// Local APIC (Intel SDM vol. 3A, 10.4.1, table 10-1 "Local APIC Register Address
// Map"): each register is 32 bits at a 16-byte aligned offset of the 4 KiB page;
// KVM hands out its first 1 KiB. ISR, TMR and IRR are 256-bit sets made of 8
// registers at 0x100, 0x180 and 0x200 with a 16-byte stride, bit v of the set
// being bit v%32 of register v/32. The ICR is two registers, low at 0x300 and
// high (destination) at 0x310. Timer mode is LVT timer bits 17-18 (10.5.4.1);
// the divide configuration encodes the divisor in bits 0, 1 and 3 (10.5.4).
// Values are little-endian in the page, as the hardware stores them.
#include "tools/decode_x86.h"

#include <string>

#include "tools/state_json.h"

namespace vmsnap::tools {
namespace {

using json = nlohmann::ordered_json;

uint64_t LoadLe(std::span<const uint8_t> b, size_t off, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v |= uint64_t{b[off + i]} << (8 * i);
  return v;
}

// A little-endian integer of `n` bytes at `off` as "0x" + 2n hex digits,
// most significant first (wide registers keep their full width).
std::string WideHex(std::span<const uint8_t> b, size_t off, size_t n) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s = "0x";
  for (size_t i = n; i-- > 0;) {
    s += kDigits[b[off + i] >> 4];
    s += kDigits[b[off + i] & 15];
  }
  return s;
}

constexpr size_t kLegacySize = 512;
constexpr size_t kHeaderOffset = 512;
constexpr size_t kAvxOffset = 576;
constexpr size_t kAvxSize = 256;

}  // namespace

json DecodeXsave(std::span<const uint8_t> a) {
  json j = json::object();
  if (a.size() < kLegacySize) {
    j["error"] = "XSAVE area too short (" + std::to_string(a.size()) + " bytes, need 512)";
    return j;
  }
  j["fcw"] = Hex(LoadLe(a, 0, 2));
  j["fsw"] = Hex(LoadLe(a, 2, 2));
  j["ftw"] = Hex(LoadLe(a, 4, 1));  // abridged: bit i set = ST(i) valid
  j["fop"] = Hex(LoadLe(a, 6, 2));
  j["fip"] = Hex(LoadLe(a, 8, 8));
  j["fdp"] = Hex(LoadLe(a, 16, 8));
  j["mxcsr"] = Hex(LoadLe(a, 24, 4));
  j["mxcsr_mask"] = Hex(LoadLe(a, 28, 4));
  // The x87 top-of-stack field of FSW (bits 11-13) says which ST(i) is which
  // physical register; the FXSAVE layout already stores them in ST order.
  for (int i = 0; i < 8; i++) j["st" + std::to_string(i)] = WideHex(a, 32 + 16 * i, 10);
  for (int i = 0; i < 16; i++) j["xmm" + std::to_string(i)] = WideHex(a, 160 + 16 * i, 16);

  if (a.size() < kHeaderOffset + 64) {
    j["error"] = "XSAVE area has no header (" + std::to_string(a.size()) + " bytes)";
    return j;
  }
  uint64_t xstate_bv = LoadLe(a, kHeaderOffset, 8);
  uint64_t xcomp_bv = LoadLe(a, kHeaderOffset + 8, 8);
  j["xstate_bv"] = Hex(xstate_bv);
  j["xcomp_bv"] = Hex(xcomp_bv);
  j["compacted"] = (xcomp_bv >> 63) != 0;
  bool avx = (xstate_bv & 4) != 0;
  j["avx_in_use"] = avx;
  if (avx && a.size() < kAvxOffset + kAvxSize) {
    j["error"] = "XSTATE_BV says AVX state is present but the area ends at " +
                 std::to_string(a.size()) + " bytes";
    return j;
  }
  // ymmN = upper half (AVX component) : lower half (xmmN).
  for (int i = 0; i < 16; i++) {
    std::string lower = WideHex(a, 160 + 16 * i, 16).substr(2);
    std::string upper = avx ? WideHex(a, kAvxOffset + 16 * i, 16).substr(2) : std::string(32, '0');
    j["ymm" + std::to_string(i)] = "0x" + upper + lower;
  }
  return j;
}

json DecodeLapic(std::span<const uint8_t> p) {
  json j = json::object();
  if (p.size() < 0x400) {
    j["error"] = "local APIC page too short (" + std::to_string(p.size()) + " bytes, need 1024)";
    return j;
  }
  auto reg = [&](size_t off) { return static_cast<uint32_t>(LoadLe(p, off, 4)); };
  auto set256 = [&](size_t base) {
    json vectors = json::array();
    for (int v = 0; v < 256; v++) {
      if ((reg(base + 16 * (v / 32)) >> (v % 32)) & 1) vectors.push_back(v);
    }
    return vectors;
  };
  j["id"] = Hex(reg(0x20));
  j["version"] = Hex(reg(0x30));
  j["tpr"] = Hex(reg(0x80));
  j["apr"] = Hex(reg(0x90));
  j["ppr"] = Hex(reg(0xa0));
  j["ldr"] = Hex(reg(0xd0));
  j["dfr"] = Hex(reg(0xe0));
  j["spurious"] = Hex(reg(0xf0));
  j["isr"] = set256(0x100);
  j["tmr"] = set256(0x180);
  j["irr"] = set256(0x200);
  j["esr"] = Hex(reg(0x280));
  j["lvt_cmci"] = Hex(reg(0x2f0));
  j["icr"] = Hex(uint64_t{reg(0x310)} << 32 | reg(0x300));
  j["lvt_timer"] = Hex(reg(0x320));
  j["lvt_thermal"] = Hex(reg(0x330));
  j["lvt_perf"] = Hex(reg(0x340));
  j["lvt_lint0"] = Hex(reg(0x350));
  j["lvt_lint1"] = Hex(reg(0x360));
  j["lvt_error"] = Hex(reg(0x370));
  j["timer_initial_count"] = Hex(reg(0x380));
  j["timer_current_count"] = Hex(reg(kLapicTmcctOffset));
  uint32_t dcr = reg(0x3e0);
  j["timer_divide"] = Hex(dcr);
  // Divide configuration bits 3,1,0 -> 000:2 001:4 010:8 011:16 100:32 101:64 110:128 111:1.
  uint32_t code = ((dcr >> 1) & 4) | (dcr & 3);
  j["timer_divisor"] = code == 7 ? 1 : (2u << code);
  static const char* const kModes[] = {"one-shot", "periodic", "tsc-deadline", "reserved"};
  j["timer_mode"] = kModes[(reg(0x320) >> 17) & 3];
  j["software_enabled"] = ((reg(0xf0) >> 8) & 1) != 0;  // SVR bit 8
  return j;
}

}  // namespace vmsnap::tools
