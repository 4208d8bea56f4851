// SPDX-License-Identifier: MIT
// Decoder for ppc64 hashed page table entries (HPTEs).
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

namespace vmsnap::tools {

// Decodes one HPTE from its two doublewords (numeric values, byte order already
// resolved). Adds the decoded fields to `out`.
void DecodeHpte(uint64_t v, uint64_t r, nlohmann::ordered_json& out);

}  // namespace vmsnap::tools
