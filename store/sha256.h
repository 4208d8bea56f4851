// SPDX-License-Identifier: MIT
// SHA-256 of a byte range: the name of a chunk object (libcrypto's, opened at
// run time: dl_library.h).
#pragma once

#include <array>
#include <cstdint>
#include <span>

#include "store/dl_library.h"

namespace vmsnap::store {

inline std::array<uint8_t, 32> Sha256(std::span<const uint8_t> bytes) {
  std::array<uint8_t, 32> out;
  dl::Sha256(bytes.data(), bytes.size(), out.data());
  return out;
}

}  // namespace vmsnap::store
