// SPDX-License-Identifier: MIT
// Architecture names as users read them ("x86_64", "s390x", "ppc64", "aarch64"), for
// messages and the JSON model, from the manifest's `Arch` codes.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

namespace vmsnap {

// `code` is a value of the manifest's Arch enum (schemas/manifest.capnp);
// an unknown one is named "unknown(N)".
std::string ArchName(uint16_t code);

template <typename E>
  requires std::is_enum_v<E>
std::string ArchName(E arch) {
  return ArchName(static_cast<uint16_t>(arch));
}

}  // namespace vmsnap
