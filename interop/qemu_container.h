// SPDX-License-Identifier: MIT
// The files that carry a QEMU migration stream: the bare stream, a libvirt
// save image ("LibvirtQemudSave" header, XML, then the stream, raw or zstd),
// and the VM state of a qcow2 internal snapshot (savevm). Layouts are in
// docs/interop-qemu.md.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace vmsnap::interop::qemu {

struct StreamBytes {
  std::string what;             // names the input in errors: "FILE", "FILE (qcow2 snapshot NAME)"
  std::span<const uint8_t> view;  // into the caller's input, when `owned` is empty
  std::vector<uint8_t> owned;     // decompressed or gathered from clusters
  std::span<const uint8_t> bytes() const { return owned.empty() ? view : std::span<const uint8_t>(owned); }
};

// Finds the stream inside `in`. `snapshot` picks a qcow2 internal snapshot
// by name or id (required when the image has more than one).
Result<StreamBytes> ExtractStream(std::span<const uint8_t> in, const std::string& what, const std::string& snapshot);

// libvirt's save-image header: magic, then five native-endian u32 (version,
// XML length, was-running, compression, cookie offset) and 14 unused u32.
inline constexpr size_t kLibvirtHeaderSize = 16 + 4 * 5 + 4 * 14;
inline constexpr char kLibvirtMagic[] = "LibvirtQemudSave";
inline constexpr char kLibvirtPartial[] = "LibvirtQemudPart";

}  // namespace vmsnap::interop::qemu
