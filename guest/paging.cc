// SPDX-License-Identifier: MIT
// Page-table walks: x86 (Intel SDM vol. 3A, chapter 4 "Paging") and aarch64
// stage 1 (Arm ARM, chapter D8).
#include "guest/paging.h"

#include <cinttypes>
#include <cstdio>

namespace vmsnap::guest {
namespace {

constexpr uint64_t kCr0Pg = 1ull << 31;
constexpr uint64_t kCr4Pse = 1ull << 4;
constexpr uint64_t kCr4Pae = 1ull << 5;
constexpr uint64_t kCr4La57 = 1ull << 12;
constexpr uint64_t kEferLma = 1ull << 10;

constexpr uint64_t kPresent = 1ull << 0;
constexpr uint64_t kPageSize = 1ull << 7;
// Physical-address bits 51:12 of a 64-bit entry (MAXPHYADDR is at most 52).
constexpr uint64_t kAddrMask = 0x000ffffffffff000ull;

// Entries are little-endian in guest memory whatever the host's byte order.
Result<uint64_t> ReadEntry(const PhysicalMemory& mem, uint64_t gpa, unsigned bytes,
                           const char* level) {
  uint8_t b[8] = {};
  Status s = mem.Read(gpa, bytes, b);
  if (!s.ok()) return s.Context(std::string(level) + " entry at " + Hex(gpa));
  uint64_t v = 0;
  for (unsigned i = 0; i < bytes; ++i) v |= uint64_t{b[i]} << (8 * i);
  return v;
}

struct Level {
  const char* name;
  unsigned shift;         // bit of the gva where this level's index starts
  bool may_map;           // a PS entry here maps a page
};

}  // namespace

PagingMode ModeOf(const PagingRegs& r) {
  if (!(r.cr0 & kCr0Pg)) return PagingMode::kNone;
  if (!(r.cr4 & kCr4Pae)) return PagingMode::kLegacy32;
  if (!(r.efer & kEferLma)) return PagingMode::kPae;
  return (r.cr4 & kCr4La57) ? PagingMode::kLong5 : PagingMode::kLong4;
}

const char* ModeName(PagingMode mode) {
  switch (mode) {
    case PagingMode::kNone: return "none";
    case PagingMode::kLegacy32: return "32-bit";
    case PagingMode::kPae: return "pae";
    case PagingMode::kLong4: return "4-level";
    case PagingMode::kLong5: return "5-level";
    case PagingMode::kArm64Off: return "mmu-off";
    case PagingMode::kArm64_4K: return "4K";
    case PagingMode::kArm64_16K: return "16K";
    case PagingMode::kArm64_64K: return "64K";
  }
  return "?";
}

Result<PagingRegs> PagingRegsOf(schema::Manifest::Reader manifest, uint64_t vcpu) {
  const auto arch = manifest.getArch();
  if (arch != schema::Arch::X8664 && arch != schema::Arch::AARCH64) {
    const char* name = arch == schema::Arch::S390X ? "s390x" : "ppc64";
    return Status::WrongArch(std::string("virtual addresses are only translated for x86_64 and "
                                         "aarch64 snapshots; this one is ") + name);
  }
  auto vcpus = manifest.getVcpus();
  if (vcpu >= vcpus.size()) {
    return Status::InvalidArgument("vCPU " + std::to_string(vcpu) + " is out of range (the snapshot has " +
                                   std::to_string(vcpus.size()) + " vCPU" +
                                   (vcpus.size() == 1 ? "" : "s") + ")");
  }
  auto v = vcpus[static_cast<unsigned>(vcpu)];
  if (arch == schema::Arch::AARCH64) {
    if (!v.isAarch64()) return Status::Corruption("vCPU " + std::to_string(vcpu) + " holds no aarch64 state");
    // ONE_REG ids of SCTLR_EL1, TCR_EL1, TTBR0_EL1, TTBR1_EL1 (op0 3, op1 0).
    constexpr uint64_t kSys = 0x6030000000130000ull;
    constexpr uint64_t kSctlr = kSys | 3 << 14 | 1 << 7, kTtbr0 = kSys | 3 << 14 | 2 << 7,
                       kTtbr1 = kTtbr0 | 1, kTcr = kTtbr0 | 2;
    PagingRegs r;
    r.arm64 = true;
    for (auto sr : v.getAarch64().getSysregs()) {
      if (sr.getId() == kSctlr) r.sctlr = sr.getValue();
      if (sr.getId() == kTcr) r.tcr = sr.getValue();
      if (sr.getId() == kTtbr0) r.ttbr0 = sr.getValue();
      if (sr.getId() == kTtbr1) r.ttbr1 = sr.getValue();
    }
    return r;
  }
  if (!v.isX8664()) {
    return Status::Corruption("vCPU " + std::to_string(vcpu) + " holds no x86_64 state");
  }
  auto sregs = v.getX8664().getSregs();
  return PagingRegs{sregs.getCr0(), sregs.getCr3(), sregs.getCr4(), sregs.getEfer()};
}

Result<Translation> TranslateArm64(const PhysicalMemory& mem, const PagingRegs& regs, uint64_t gva) {
  Translation t;
  t.gva = gva;
  if (!(regs.sctlr & 1)) {  // SCTLR_EL1.M = 0: addresses are physical
    t.mode = PagingMode::kArm64Off;
    t.mapped = true;
    t.gpa = gva;
    t.page_size = 4096;
    t.root_name = "none";
    return t;
  }
  const bool upper = (gva >> 55) & 1;
  const uint64_t tcr = regs.tcr;
  const unsigned tsz = static_cast<unsigned>(upper ? (tcr >> 16) & 0x3f : tcr & 0x3f);
  const bool epd = upper ? (tcr >> 23) & 1 : (tcr >> 7) & 1;
  const bool tbi = upper ? (tcr >> 38) & 1 : (tcr >> 37) & 1;
  const unsigned tg = static_cast<unsigned>(upper ? (tcr >> 30) & 3 : (tcr >> 14) & 3);
  // TG0: 0 4K, 1 64K, 2 16K; TG1: 1 16K, 2 4K, 3 64K.
  unsigned g;
  if (upper) g = tg == 1 ? 14 : tg == 3 ? 16 : 12;
  else g = tg == 1 ? 16 : tg == 2 ? 14 : 12;
  t.mode = g == 12 ? PagingMode::kArm64_4K : g == 14 ? PagingMode::kArm64_16K : PagingMode::kArm64_64K;
  t.root_name = upper ? "TTBR1_EL1" : "TTBR0_EL1";
  const unsigned ia_bits = 64 - tsz;
  if (tsz < 16 || tsz > 39) {
    return Status::InvalidArgument(std::string("TCR_EL1.") + (upper ? "T1SZ" : "T0SZ") + " = " +
                                   std::to_string(tsz) + " is outside 16..39");
  }
  // Every bit above the input size equals bit 55 (the top byte excepted with TBI).
  const unsigned top = tbi ? 56 : 64;
  for (unsigned b = ia_bits; b < top; ++b) {
    if (((gva >> b) & 1) != static_cast<uint64_t>(upper)) {
      return Status::InvalidArgument("gva " + Hex(gva) + " is outside the " + std::to_string(ia_bits) +
                                     "-bit range of " + t.root_name);
    }
  }
  if (epd) {
    return Status::InvalidArgument(std::string("walks through ") + t.root_name + " are disabled (TCR_EL1.EPD" +
                                   (upper ? "1" : "0") + " = 1)");
  }
  const unsigned stride = g - 3;
  const unsigned levels = (ia_bits - g + stride - 1) / stride;
  const unsigned start = 4 - levels;
  const unsigned first_bits = (ia_bits - g) - (levels - 1) * stride;
  static const char* const kNames[] = {"L0", "L1", "L2", "L3"};
  const uint64_t oa_mask = 0x0000ffffffffffffull;
  uint64_t table = (upper ? regs.ttbr1 : regs.ttbr0) & oa_mask & ~1ull;
  // BADDR's bits below the first table's size (at least 64 bytes) are RES0.
  const unsigned align = first_bits + 3 > 6 ? first_bits + 3 : 6;
  table &= ~((uint64_t{1} << align) - 1);
  t.root = table;
  for (unsigned level = start; level < 4; ++level) {
    const unsigned shift = g + (3 - level) * stride;
    const unsigned bits = level == start ? first_bits : stride;
    WalkStep s;
    s.arm64 = true;
    s.level = kNames[level];
    s.table_gpa = table;
    s.index = static_cast<unsigned>((gva >> shift) & ((uint64_t{1} << bits) - 1));
    s.entry_gpa = table + 8ull * s.index;
    VMSNAP_ASSIGN_OR_RETURN(s.entry, ReadEntry(mem, s.entry_gpa, 8, s.level));
    t.steps.push_back(s);
    if (!(s.entry & 1)) {
      t.fault = "invalid descriptor";
      return t;
    }
    const bool table_bit = (s.entry >> 1) & 1;
    if (level == 3) {
      if (!table_bit) {
        t.fault = "reserved descriptor at level 3";
        return t;
      }
    } else if (!table_bit) {
      // Blocks: level 1 and 2 with 4K pages, level 2 with 16K and 64K (without 52-bit addressing).
      const bool allowed = (g == 12 && (level == 1 || level == 2)) || (g != 12 && level == 2);
      if (!allowed) {
        t.fault = std::string("block descriptor not allowed at level ") + std::to_string(level);
        return t;
      }
    }
    if (level == 3 || !table_bit) {
      const uint64_t size = uint64_t{1} << shift;
      t.steps.back().leaf = true;
      t.mapped = true;
      t.page_size = size;
      t.gpa = (s.entry & oa_mask & ~(size - 1)) | (gva & (size - 1));
      return t;
    }
    table = s.entry & oa_mask & ~((uint64_t{1} << g) - 1);
  }
  return Status::Internal("aarch64 walk fell through");
}

Result<Translation> Translate(const PhysicalMemory& mem, const PagingRegs& regs, uint64_t gva) {
  if (regs.arm64) return TranslateArm64(mem, regs, gva);
  Translation t;
  t.root = regs.cr3;
  t.mode = ModeOf(regs);
  t.gva = gva;

  if (t.mode == PagingMode::kNone) {
    if (gva > 0xffffffffull) {
      return Status::InvalidArgument("gva " + Hex(gva) + " is beyond the 32-bit linear address "
                                     "space (paging is off: CR0.PG=0)");
    }
    t.mapped = true;
    t.gpa = gva;
    t.page_size = 4096;
    return t;
  }

  if (t.mode == PagingMode::kLegacy32 || t.mode == PagingMode::kPae) {
    if (gva > 0xffffffffull) {
      return Status::InvalidArgument("gva " + Hex(gva) + " is beyond the 32-bit linear address "
                                     "space of " + ModeName(t.mode) + " paging");
    }
  } else {
    // Canonical: bits 63..47 (or 63..56 with LA57) all equal.
    const unsigned top = t.mode == PagingMode::kLong5 ? 56 : 47;
    const uint64_t high = gva >> top;
    const uint64_t ones = (~0ull) >> top;
    if (high != 0 && high != ones) {
      return Status::InvalidArgument("gva " + Hex(gva) + " is not canonical for " +
                                     ModeName(t.mode) + " paging");
    }
  }

  if (t.mode == PagingMode::kLegacy32) {
    // Two levels of 1024 four-byte entries; CR4.PSE allows 4 MiB pages.
    const Level levels[] = {{"PD", 22, (regs.cr4 & kCr4Pse) != 0}, {"PT", 12, false}};
    uint64_t table = regs.cr3 & 0xfffff000ull;
    for (const Level& l : levels) {
      WalkStep s;
      s.level = l.name;
      s.table_gpa = table;
      s.index = static_cast<unsigned>((gva >> l.shift) & 0x3ff);
      s.entry_gpa = table + 4ull * s.index;
      s.entry_bytes = 4;
      VMSNAP_ASSIGN_OR_RETURN(s.entry, ReadEntry(mem, s.entry_gpa, 4, l.name));
      t.steps.push_back(s);
      if (!(s.entry & kPresent)) {
        t.fault = "not present";
        return t;
      }
      if (l.may_map && (s.entry & kPageSize)) {
        // PSE-36: bits 20:13 of the entry give physical-address bits 39:32.
        const uint64_t base = (s.entry & 0xffc00000ull) | (((s.entry >> 13) & 0xffull) << 32);
        t.steps.back().leaf = true;
        t.mapped = true;
        t.page_size = 4ull << 20;
        t.gpa = base | (gva & 0x3fffffull);
        return t;
      }
      if (l.shift == 12) {
        t.steps.back().leaf = true;
        t.mapped = true;
        t.page_size = 4096;
        t.gpa = (s.entry & 0xfffff000ull) | (gva & 0xfff);
        return t;
      }
      table = s.entry & 0xfffff000ull;
    }
    return Status::Internal("32-bit walk fell through");
  }

  // PAE and long mode share 512-entry tables of 8-byte entries; they differ in
  // the top: a 4-entry PDPT from CR3[31:5] for PAE, PML4 (and PML5) for long mode.
  std::vector<Level> levels;
  uint64_t table = 0;
  if (t.mode == PagingMode::kPae) {
    levels = {{"PDPT", 30, false}, {"PD", 21, true}, {"PT", 12, false}};
    table = regs.cr3 & 0xffffffe0ull;
  } else {
    if (t.mode == PagingMode::kLong5) levels.push_back({"PML5", 48, false});
    levels.push_back({"PML4", 39, false});
    levels.push_back({"PDPT", 30, true});
    levels.push_back({"PD", 21, true});
    levels.push_back({"PT", 12, false});
    table = regs.cr3 & kAddrMask;
  }
  for (const Level& l : levels) {
    WalkStep s;
    s.level = l.name;
    s.table_gpa = table;
    const unsigned bits = (t.mode == PagingMode::kPae && l.shift == 30) ? 2 : 9;
    s.index = static_cast<unsigned>((gva >> l.shift) & ((1u << bits) - 1));
    s.entry_gpa = table + 8ull * s.index;
    VMSNAP_ASSIGN_OR_RETURN(s.entry, ReadEntry(mem, s.entry_gpa, 8, l.name));
    t.steps.push_back(s);
    if (!(s.entry & kPresent)) {
      t.fault = "not present";
      return t;
    }
    const bool ps = (s.entry & kPageSize) != 0;
    if (ps && !l.may_map) {
      t.fault = "reserved bit set (PS is reserved at this level)";
      return t;
    }
    if (ps || l.shift == 12) {
      const uint64_t size = 1ull << l.shift;
      t.steps.back().leaf = true;
      t.mapped = true;
      t.page_size = size;
      t.gpa = (s.entry & kAddrMask & ~(size - 1)) | (gva & (size - 1));
      return t;
    }
    table = s.entry & kAddrMask;
  }
  return Status::Internal("page walk fell through");
}

std::string FaultMessage(const Translation& t) {
  if (t.mapped || t.steps.empty()) return "gva " + Hex(t.gva) + " is mapped";
  const WalkStep& s = t.steps.back();
  char entry[24];
  std::snprintf(entry, sizeof entry, s.entry_bytes == 4 ? "0x%08" PRIx64 : "0x%016" PRIx64, s.entry);
  return "gva " + Hex(t.gva) + " is not mapped: " + s.level + " entry " + std::to_string(s.index) +
         " at gpa " + Hex(s.entry_gpa) + " is " + entry + " (" + t.fault + ")";
}

std::string EntryFlags(const WalkStep& s) {
  if (s.arm64) {
    std::string out;
    auto add = [&](const std::string& f) { out += (out.empty() ? "" : " ") + f; };
    if (!(s.entry & 1)) return "-";
    if (!s.leaf) {
      add("TABLE");
      if ((s.entry >> 59) & 1) add("PXNTable");
      if ((s.entry >> 60) & 1) add("XNTable");
      const unsigned ap = (s.entry >> 61) & 3;
      if (ap) add("APTable=" + std::to_string(ap >> 1) + std::to_string(ap & 1));
      return out;
    }
    add(((s.entry >> 1) & 1) && std::string(s.level) == "L3" ? "PAGE" : "BLOCK");
    if ((s.entry >> 10) & 1) add("AF");
    const unsigned ap = (s.entry >> 6) & 3;
    add("AP=" + std::to_string(ap >> 1) + std::to_string(ap & 1));
    add("SH=" + std::to_string((s.entry >> 8) & 3));
    add("ATTR=" + std::to_string((s.entry >> 2) & 7));
    if ((s.entry >> 11) & 1) add("nG");
    if ((s.entry >> 53) & 1) add("PXN");
    if ((s.entry >> 54) & 1) add("UXN");
    return out;
  }
  struct Flag {
    unsigned bit;
    const char* name;
  };
  static constexpr Flag kFlags[] = {{0, "P"}, {1, "RW"}, {2, "US"}, {3, "PWT"}, {4, "PCD"},
                                    {5, "A"}, {6, "D"},  {7, "PS"}, {8, "G"},   {63, "NX"}};
  std::string out;
  for (const Flag& f : kFlags) {
    if (f.bit >= s.entry_bytes * 8) continue;
    if (!((s.entry >> f.bit) & 1)) continue;
    // Bit 7 of a PT entry is PAT, not PS; bit 6 and 8 only mean D and G in leaves.
    std::string name = f.name;
    if (f.bit == 7 && s.leaf && std::string(s.level) == "PT") name = "PAT";
    if ((f.bit == 6 || f.bit == 8) && !s.leaf) continue;
    if (!out.empty()) out += ' ';
    out += name;
  }
  return out.empty() ? "-" : out;
}

}  // namespace vmsnap::guest
