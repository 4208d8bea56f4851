// SPDX-License-Identifier: MIT
// QEMU x86-64 machine state <-> vmsnap manifest, both ways through one
// mapping table: the cpu, cpu_common, apic, ioapic, i8259, i8254 and kvmclock
// sections map to named fields; every other section (and every RAM block
// other than guest RAM) is kept as a device record on import and written back
// as it was on export. The table and what is lost are in docs/interop-qemu.md.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/status.h"
#include "interop/qemu_stream.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::interop::qemu {

// CPUID leaves as KVM takes them (struct kvm_cpuid_entry2 without padding);
// import has no KVM of its own, so the caller supplies them.
struct CpuidLeaf {
  uint32_t function = 0, index = 0, flags = 0, eax = 0, ebx = 0, ecx = 0, edx = 0;
};

struct ImportOptions {
  std::vector<CpuidLeaf> cpuid;  // for vCPU 0; APIC IDs are set per vCPU
  std::string cpuid_source;      // recorded: "host KVM", "--cpuid-from FILE"
  std::string tool_version;
};

// Guest-physical layout of the imported RAM: one contiguous piece of a block.
struct RamPiece {
  const RamBlock* block;
  uint64_t block_offset;
  uint64_t gpa;
  uint64_t size;
};

struct Imported {
  std::vector<RamPiece> memory;        // ascending gpa, page-aligned
  std::vector<std::string> warnings;   // one line per kind of loss
};

// Fills `m` (everything but chunks) from `stream` and returns where guest RAM
// goes; the caller adds the memory to its writer.
Result<Imported> ToManifest(const Stream& stream, const ImportOptions& options, schema::Manifest::Builder m);

struct ExportOptions {
  // The destination's QEMU machine (the CONFIGURATION section must name it):
  // "" = the machine an imported snapshot came from, else "microvm".
  std::string machine;
};

struct Exported {
  std::vector<std::string> warnings;  // one line per kind of loss
};

// Reads guest-physical memory of the snapshot.
using ReadGuest = std::function<Status(uint64_t gpa, uint64_t len, uint8_t* out)>;

// Writes `m` and its memory as a QEMU 7.2 migration stream that
// `qemu-system-x86_64 -incoming` accepts (docs/interop-qemu.md gives the
// command line). A snapshot imported from QEMU keeps its machine, its section
// list and its device records; any other gets microvm's minimal section set.
Result<Exported> FromManifest(schema::Manifest::Reader m, const ReadGuest& read, const ExportOptions& options,
                              const StreamSink& out);

// The device description of QEMU 7.2's microvm (generated at build time).
extern const char kMicrovmVmdesc[];

// Where vmsnap's VMM places RAM (docs/guest-abi.md): below 3 GiB from 0, the
// rest from 4 GiB.
inline constexpr uint64_t kLowRamEnd = 0xC0000000ull;
inline constexpr uint64_t kHighRamStart = 0x100000000ull;
// RAM blocks other than the guest RAM (ROMs, video memory) are kept as device
// records up to this size.
inline constexpr uint64_t kMaxOtherBlock = 64ull << 20;

}  // namespace vmsnap::interop::qemu
