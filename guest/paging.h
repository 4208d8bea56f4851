// SPDX-License-Identifier: MIT
// Address translation over captured guest memory: walks the page tables a
// vCPU's registers select -- x86 (CR0/CR3/CR4/EFER: no paging, 32-bit, PAE, 4-
// and 5-level long mode) and aarch64 stage 1 (SCTLR_EL1.M, TCR_EL1, TTBR0/1_EL1;
// 4K, 16K and 64K granules) -- and records every step, so `translate` can show
// the walk and `read` can report exactly where it stopped.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "schemas/manifest.capnp.h"
#include "guest/memory.h"

namespace vmsnap::guest {

struct PagingRegs {
  uint64_t cr0 = 0;
  uint64_t cr3 = 0;
  uint64_t cr4 = 0;
  uint64_t efer = 0;
  // aarch64: the EL1&0 stage-1 regime's registers instead.
  bool arm64 = false;
  uint64_t sctlr = 0, tcr = 0, ttbr0 = 0, ttbr1 = 0;
};

enum class PagingMode { kNone, kLegacy32, kPae, kLong4, kLong5, kArm64Off, kArm64_4K, kArm64_16K, kArm64_64K };

// Decided as the CPU does: CR0.PG, then CR4.PAE, EFER.LMA, CR4.LA57.
PagingMode ModeOf(const PagingRegs& regs);
// "none", "32-bit", "pae", "4-level", "5-level"; "mmu-off", "4K", "16K", "64K" (aarch64)
const char* ModeName(PagingMode mode);

// The control registers of vCPU `vcpu` (an index into the manifest's vCPUs).
// WrongArch for a snapshot that is neither x86_64 nor aarch64; InvalidArgument for an index
// out of range.
Result<PagingRegs> PagingRegsOf(schema::Manifest::Reader manifest, uint64_t vcpu);

struct WalkStep {
  const char* level = "";  // "PML5", "PML4", "PDPT", "PD", "PT"; "L0".."L3" on aarch64
  uint64_t table_gpa = 0;
  unsigned index = 0;
  uint64_t entry_gpa = 0;
  uint64_t entry = 0;
  unsigned entry_bytes = 8;  // 4 in 32-bit paging
  bool leaf = false;         // this entry maps the page
  bool arm64 = false;        // an aarch64 descriptor
};

struct Translation {
  PagingMode mode = PagingMode::kNone;
  uint64_t gva = 0;
  std::vector<WalkStep> steps;
  // True when the walk reached a page. Otherwise steps.back() is the entry
  // where it stopped and `fault` says why ("not present", a reserved bit).
  bool mapped = false;
  std::string fault;
  uint64_t gpa = 0;        // valid when mapped
  uint64_t page_size = 0;  // 4 KiB, 2 MiB, 4 MiB or 1 GiB; with no paging, 4 KiB
  uint64_t root = 0;       // the table the walk started from (CR3, or the TTBR chosen)
  const char* root_name = "CR3";  // "CR3", "TTBR0_EL1", "TTBR1_EL1"
};

// Translates `gva`. Memory errors (a table outside guest memory, a corrupt
// chunk) and addresses the mode cannot express (non-canonical, above 4 GiB in
// 32-bit modes) are errors; a walk that stops on an entry is a Translation
// with mapped == false.
Result<Translation> Translate(const PhysicalMemory& memory, const PagingRegs& regs, uint64_t gva);

// One line: "gva 0x.. is not mapped: PT entry 5 at gpa 0x.. is 0x.. (not present)".
std::string FaultMessage(const Translation& t);

// aarch64 stage 1 (Arm ARM D8, "The AArch64 Virtual Memory System
// Architecture"): the TTBR by VA bit 55, the input size from T0SZ/T1SZ, the
// granule from TG0/TG1, the start level from both; top-byte-ignore honoured.
Result<Translation> TranslateArm64(const PhysicalMemory& memory, const PagingRegs& regs, uint64_t gva);

// The set flags of a page-table entry, e.g. "P RW US A D PS NX" (x86) or
// "PAGE AF AP=01 SH=3 UXN" (aarch64).
std::string EntryFlags(const WalkStep& step);

}  // namespace vmsnap::guest
