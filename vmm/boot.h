// SPDX-License-Identifier: MIT
// Boot of a fresh guest per docs/guest-abi.md: loading the image (ELF64 by
// PT_LOAD, else flat at 0x100000), the GDT and identity page tables, and the
// long-mode entry state of every vCPU.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "kvm/x86_64/x86.h"
#include "vmm/memory.h"

namespace vmsnap::vmm {

inline constexpr uint64_t kFlatLoadAddr = 0x100000;
inline constexpr uint64_t kGdtAddr = 0x1000;
inline constexpr uint64_t kPml4Addr = 0x2000;
inline constexpr uint64_t kPdptAddr = 0x3000;
inline constexpr uint64_t kPdAddr = 0x4000;       // one page per GiB mapped
inline constexpr uint64_t kStackArea = 0x80000;   // per-vCPU stacks grow down from 0x100000
inline constexpr uint64_t kStackSize = 0x4000;    // 16 KiB each
inline constexpr int kMaxVcpus = static_cast<int>((kFlatLoadAddr - kStackArea) / kStackSize);
inline constexpr uint64_t kTssAddr = 0xfffbd000;
inline constexpr uint64_t kIdentityMapAddr = 0xfffbc000;
// The guest's generation ID: 16 random bytes the VMM writes before the first
// instruction of every `run` and `load`, in the GDT page's unused tail
// (docs/guest-abi.md, "Generation ID").
inline constexpr uint64_t kGenerationIdAddr = 0x1f00;

// Loads `path` into guest memory; returns the entry point.
Result<uint64_t> LoadImage(const std::string& path, GuestMemory& mem);

// GDT and page tables in 0x1000-0x7ffff.
Status WriteBootStructures(GuestMemory& mem);

// Long-mode entry state of vCPU `index` (of `count`): CPUID, MP state,
// segment and control registers, RIP/RSP/RDI/RSI/RDX, LAPIC LINT0/LINT1.
Status SetupVcpu(kvm::x86::VcpuOps& vcpu, int count, uint64_t ram_size, uint64_t entry,
                 const std::vector<kvm_cpuid_entry2>& supported_cpuid);

}  // namespace vmsnap::vmm
