// SPDX-License-Identifier: MIT
// Architecture names: see arch.h.
#include "base/arch.h"

namespace vmsnap {

std::string ArchName(uint16_t code) {
  // The codes are fixed on the wire by schemas/manifest.capnp.
  switch (code) {
    case 0: return "x86_64";
    case 1: return "s390x";
    case 2: return "ppc64";
    case 3: return "aarch64";
  }
  return "unknown(" + std::to_string(code) + ")";
}

}  // namespace vmsnap
