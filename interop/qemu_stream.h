// SPDX-License-Identifier: MIT
// Reader of QEMU's migration stream (the bytes `migrate "exec:cat > FILE"`
// writes, and what savevm and libvirt save images wrap). Device sections are
// cut into named fields by the stream's own JSON description ("vmdesc"), so
// no device layout is hard-coded here; RAM is decoded page by page.
// See docs/interop-qemu.md for the layout and what is supported.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/mapping.h"
#include "base/status.h"

namespace vmsnap::interop::qemu {

// One scalar (or array of scalars) inside a device section.
struct Field {
  uint64_t offset = 0;   // into DeviceSection::data
  uint64_t size = 0;     // bytes of one element
  uint32_t count = 1;    // elements
};

// A non-iterative section ("cpu", "apic", "serial", ...), as QEMU wrote it.
struct DeviceSection {
  std::string idstr;
  uint32_t instance = 0;
  uint32_t version = 0;
  uint64_t stream_offset = 0;   // of the section's first data byte
  std::vector<uint8_t> data;    // the section's bytes, without header and footer
  // Flattened field names: "env.regs", "env.segs[1].base", "env.tsc_khz"
  // (subsection fields by their own name). Subsections present: by name.
  std::map<std::string, Field> fields;
  std::vector<std::string> subsections;

  bool Has(std::string_view name) const { return fields.count(std::string(name)) != 0; }
  // Writes element `index` of `name` big-endian, truncated to the field's
  // size; false when the section has no such field.
  bool Set(std::string_view name, uint64_t value, uint32_t index = 0);
  bool HasSubsection(std::string_view name) const;
  // Big-endian unsigned value of element `index` of `name`; 0 when absent.
  uint64_t U(std::string_view name, uint32_t index = 0) const;
};

struct RamBlock {
  std::string name;           // "pc.ram", "microvm.ram", "pc.bios", ...
  // used_length bytes; pages never sent are zero. Anonymous memory mapped
  // without reserve: the stream declares the size, and only the pages it
  // sends (or that are read later) cost memory.
  Mapping data;
  uint64_t pages_sent = 0;
};

struct Stream {
  uint32_t version = 0;            // 3
  std::string machine;             // from the CONFIGURATION section
  std::vector<std::string> capabilities;  // migration capabilities the stream names
  std::vector<RamBlock> blocks;
  std::vector<DeviceSection> sections;   // in stream order
  std::string vmdesc;              // the JSON description, as written

  const DeviceSection* Find(std::string_view idstr, uint32_t instance = 0) const;
  const RamBlock* FindBlock(std::string_view name) const;
};

// Parses a complete stream held in memory. `what` names the input in errors
// ("FILE", "FILE: snapshot NAME"). Errors name the section and stream offset:
// truncation, unknown stream/section versions, another architecture's
// machine, compressed/XBZRLE/multifd pages, a stream without vmdesc.
Result<Stream> ParseStream(std::span<const uint8_t> in, const std::string& what);

// True when `in` starts like a migration stream (the "QEVM" magic).
bool LooksLikeStream(std::span<const uint8_t> in);

// --- Writing (export) ---

// Which vmdesc entry to lay out, and under which instance to write it (a
// one-vCPU description serves every vCPU).
struct SectionPick {
  std::string idstr;
  uint32_t from_instance = 0;
  uint32_t instance = 0;
};
struct Layout {
  std::vector<DeviceSection> sections;  // in pick order: fields at zero, subsection headers in place
  std::string vmdesc;                   // the description of exactly these sections
};
// Lays out the picked sections of `vmdesc` (a "devices" JSON as QEMU writes
// it). A pick the description lacks is an error naming it.
Result<Layout> LayoutSections(std::string_view vmdesc, const std::vector<SectionPick>& picks);

// The (id string, instance) of every section `vmdesc` describes, in order.
Result<std::vector<std::pair<std::string, uint32_t>>> DescribedSections(std::string_view vmdesc);

// One RAM block to write; `read` fills `len` bytes from `offset` in the block.
struct RamSource {
  std::string name;
  uint64_t size = 0;
  std::function<Status(uint64_t offset, uint64_t len, uint8_t* out)> read;
};

// Receives the stream in order.
using StreamSink = std::function<Status(const uint8_t* data, size_t len)>;

// Writes a version-3 stream as QEMU 7.2 does for a stopped VM: CONFIGURATION
// naming `machine`, the RAM section (START with the block list, END with every
// page; all-zero pages as zero records), each section as a FULL section with
// its footer, EOF, then `vmdesc`.
Status WriteStream(const std::string& machine, const std::vector<RamSource>& ram,
                   const std::vector<DeviceSection>& sections, const std::string& vmdesc, const StreamSink& out);

// Migration stream constants (QEMU's savevm format, version 3).
inline constexpr uint32_t kMagic = 0x5145564d;  // "QEVM"
inline constexpr uint32_t kVersion = 3;
enum SectionType : uint8_t {
  kEof = 0x00,
  kStart = 0x01,
  kPart = 0x02,
  kEnd = 0x03,
  kFull = 0x04,
  kSubsection = 0x05,
  kVmdesc = 0x06,
  kConfiguration = 0x07,
  kCommand = 0x08,
  kFooter = 0x7e,
};
// RAM page record flags, in the low bits of each record's be64 address.
inline constexpr uint64_t kRamZero = 0x02;
inline constexpr uint64_t kRamMemSize = 0x04;
inline constexpr uint64_t kRamPage = 0x08;
inline constexpr uint64_t kRamEos = 0x10;
inline constexpr uint64_t kRamContinue = 0x20;
inline constexpr uint64_t kRamXbzrle = 0x40;
inline constexpr uint64_t kRamHook = 0x80;
inline constexpr uint64_t kRamCompressPage = 0x100;
inline constexpr uint64_t kRamMultifdFlush = 0x200;
inline constexpr uint32_t kRamSectionVersion = 4;
inline constexpr uint64_t kPageSize = 4096;

}  // namespace vmsnap::interop::qemu
