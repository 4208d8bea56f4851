// SPDX-License-Identifier: MIT
// Decoders for the x86 architectural images a snapshot stores as blobs: the
// XSAVE area and the local APIC register page. inspect and diff show these.
#pragma once

#include <cstdint>
#include <span>

#include <nlohmann/json.hpp>

namespace vmsnap::tools {

// The XSAVE area as KVM_GET_XSAVE(2) returns it (standard, non-compacted
// format): x87 and SSE registers from the legacy region, the XSAVE header, and
// the upper halves of the YMM registers from the AVX component. A short or
// malformed area yields an object with an "error" key, never a crash.
nlohmann::ordered_json DecodeXsave(std::span<const uint8_t> area);

// struct kvm_lapic_state.regs (the 1 KiB APIC register page) as named registers.
nlohmann::ordered_json DecodeLapic(std::span<const uint8_t> page);

// Byte offset and length of the APIC timer current count in the register page:
// KVM_GET_LAPIC computes it from the running timer, so it changes with time.
inline constexpr size_t kLapicTmcctOffset = 0x390;
inline constexpr size_t kLapicTmcctSize = 4;

}  // namespace vmsnap::tools
