// SPDX-License-Identifier: MIT
// Decoders for s390x memory metadata: CMMA page states and storage keys.
#pragma once

#include <nlohmann/json.hpp>

#include "schemas/s390x.capnp.h"

namespace vmsnap::tools {

// CMMA values (one byte per page, as KVM_S390_GET_CMMA_BITS returns them) as
// counts per usage state and runs of consecutive pages in the same state.
nlohmann::ordered_json DecodeCmma(capnp::List<schema::s390::CmmaRun>::Reader runs);

// Storage keys (one byte per page) as counts per access key and per flag, and
// runs of consecutive pages with the same key.
nlohmann::ordered_json DecodeSkeys(capnp::List<schema::s390::SkeyRun>::Reader runs);

}  // namespace vmsnap::tools
