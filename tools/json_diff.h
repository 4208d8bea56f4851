// SPDX-License-Identifier: MIT
// Leaf-by-leaf comparison of two snapshot JSON models (tools/state_json.h):
// what `vmsnap diff` reports for vCPU, VM and device fields.
#pragma once

#include <string>
#include <vector>

#include "tools/state_json.h"

namespace vmsnap::tools {

struct Difference {
  std::string path;  // as inspect --json nests it: vcpus[0].regs.rip, vcpus[1].msrs.0xc0000082
  Json a;            // null when the field is absent from A
  Json b;
};

struct JsonDiffOptions {
  // Skip the paths in `volatile_a`/`volatile_b` (time-dependent state) and
  // mask the volatile bytes of raw blobs.
  bool ignore_volatile = false;
  const VolatileSet* volatile_a = nullptr;
  const VolatileSet* volatile_b = nullptr;
  // Also compare what describes the file rather than the VM (see kMetadataPaths).
  bool include_metadata = false;
};

// Paths that describe the snapshot file, not the VM, and that diff skips
// unless asked: they differ between any two files, even of the same VM state.
extern const char* const kMetadataPaths[];

// A raw blob with a decoded view beside it ("xsave" and "xsave_decoded") is
// compared through the decoded view; the raw bytes are reported only when
// they differ and the decoded view does not (a byte the decoder does not show).
std::vector<Difference> DiffJson(const Json& a, const Json& b, const JsonDiffOptions& options);

// The arm64 register lists of every vCPU (sysregs, firmware, other_regs and
// reg_list, stored in whatever order KVM_GET_REG_LIST gave) rewritten as
// objects keyed by register name, as inspect decodes it ("TCR_EL1",
// "PSCI_VERSION", "CCSIDR[0]"), so that DiffJson pairs registers by ONE_REG
// id and not by position: a register present on one side only is reported
// alone instead of shifting every register after it. reg_list maps each
// listed name to its id; reg_list_decoded, then redundant, is dropped.
void KeyArm64RegistersByName(Json& snapshot);

}  // namespace vmsnap::tools
