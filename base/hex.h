// SPDX-License-Identifier: MIT
// Hexadecimal formatting of addresses, offsets and register values, as every
// message and JSON model prints them ("0x" and lower-case digits).
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace vmsnap {

std::string Hex(uint64_t v);

// Bytes as lower-case hex digits, two per byte, in order (ids, digests).
std::string BytesHex(std::span<const uint8_t> bytes);

}  // namespace vmsnap
