// SPDX-License-Identifier: MIT
// Writers of guest memory in the formats forensic tools read: an ELF64 core
// (gdb, crash), LiME (Volatility) and a flat raw image. They stream: memory is
// read and written a piece at a time, and zero pages become holes in the output.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/progress.h"
#include "base/status.h"
#include "format/io.h"
#include "schemas/manifest.capnp.h"
#include "guest/memory.h"

namespace vmsnap::forensics {

enum class ExportFormat { kElf, kLime, kRaw };
Result<ExportFormat> ParseExportFormat(std::string_view name);

struct ExportOptions {
  // Bytes of guest memory read at a time; bounds the memory export uses.
  uint64_t piece_bytes = 4ull << 20;
  // Called with (bytes of guest memory done, total) after each piece.
  ProgressFn progress;
  Env* env = nullptr;               // nullptr = the real file system
  std::vector<std::string> inputs;  // the snapshots read: refused as the output
};

struct ExportStats {
  uint64_t file_size = 0;      // logical size of the output
  uint64_t data_written = 0;   // bytes of memory actually written (non-zero pages)
  uint64_t memory_bytes = 0;   // guest memory covered
};

// Writes `memory` (and, for ELF, the vCPU registers from `manifest`) to
// `out_path` through OutputFile (format/output.h): a temporary file in the
// same directory, created mode 0600, fsynced and renamed into place; nothing
// appears at `out_path` on error. Raw and LiME images may also go to "-"
// (standard output), a FIFO or a character device, in order.
Result<ExportStats> Export(const guest::PhysicalMemory& memory, schema::Manifest::Reader manifest,
                           ExportFormat format, const std::string& out_path,
                           const ExportOptions& options = {});

// Builders of the headers, exposed for tests. Both write explicit byte orders.

// struct elf_prstatus for x86-64 (336 bytes) holding vCPU `index`'s registers,
// pr_pid = index + 1.
std::vector<uint8_t> X86Prstatus(schema::x86::Vcpu::Reader vcpu, uint32_t index);
// The NT_X86_XSTATE note of an x86-64 vCPU: its XSAVE area with XCR0 in the
// bytes software owns (offset 464), where the kernel's own cores put it.
std::vector<uint8_t> X86Xstate(schema::x86::Vcpu::Reader vcpu);
// QEMU's "QEMU" note of an x86-64 vCPU (QEMUCPUState version 1, 440 bytes):
// general registers, segments with QEMU's flag layout, GDT/IDT, CR0-CR4 and
// KERNEL_GS_BASE. crash reads CR3 and the IDT base from it.
std::vector<uint8_t> X86QemuCpuState(schema::x86::Vcpu::Reader vcpu);
// The same for an aarch64 vCPU: pr_reg is struct user_pt_regs (X0-X30, sp,
// pc, pstate); sp is SP_EL1 when PSTATE says EL1h, else SP_EL0. 392 bytes.
std::vector<uint8_t> Arm64Prstatus(schema::aarch64::Vcpu::Reader vcpu, uint32_t index);

// struct lime_mem_range_header (32 bytes, little-endian).
std::vector<uint8_t> LimeHeader(uint64_t start, uint64_t end_inclusive);

}  // namespace vmsnap::forensics
