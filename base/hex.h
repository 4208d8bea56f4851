// SPDX-License-Identifier: MIT
// Hexadecimal formatting of addresses, offsets and register values, as every
// message and JSON model prints them ("0x" and lower-case digits).
#pragma once

#include <cstdint>
#include <string>

namespace vmsnap {

std::string Hex(uint64_t v);

}  // namespace vmsnap
