// SPDX-License-Identifier: MIT
// Names of arm64 ONE_REG ids and vCPU init features, for inspect and diff.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace vmsnap::tools {

// "SCTLR_EL1", "X3", "CNTV_CVAL_EL0", "PSCI_VERSION", "Z5", "CCSIDR[1]";
// a system register without a known name as "S3_0_C15_C2_1"; anything else
// as its hex id.
std::string Arm64RegName(uint64_t id);

// The KVM_ARM_VCPU_INIT feature bits that are set, by name ("PSCI_0_2", "SVE").
nlohmann::ordered_json Arm64Features(const uint32_t* words, unsigned n);

}  // namespace vmsnap::tools
