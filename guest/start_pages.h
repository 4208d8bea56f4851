// SPDX-License-Identifier: MIT
// Where a snapshot's vCPUs resume: the pages each one touches first when it
// runs again (the instruction it runs next, the top of its stack, and the
// page tables that map them), found from the snapshot's registers and its
// own page tables. A lazy loader brings these in before the guest asks.
#pragma once

#include <cstdint>
#include <vector>

#include "guest/memory.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::guest {

// The linear addresses vCPU `vcpu` touches first: x86_64, CS.base + RIP and
// SS.base + RSP - 8 (cut to 32 bits outside long mode); aarch64, PC and the
// stack pointer PSTATE selects (SP_EL1 in EL1h, SP_EL0 with SPSel clear;
// none in EL2h or for an AArch32 vCPU). Empty for s390x and ppc64 (their MMUs are not walked here)
// and for an index out of range.
std::vector<uint64_t> StartAddresses(schema::Manifest::Reader manifest, uint64_t vcpu);

// The guest-physical pages (page-aligned, in order, each once) where every
// vCPU's start addresses translate through its page tables as `memory` holds
// them; every table the walks read is read through `memory`. An address that
// is not mapped, or whose walk fails (a table outside guest memory, a read
// that fails), adds nothing: this is a hint, never an error.
std::vector<uint64_t> StartPages(schema::Manifest::Reader manifest, const PhysicalMemory& memory);

}  // namespace vmsnap::guest
