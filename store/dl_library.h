// SPDX-License-Identifier: MIT
// A shared library opened on the first call into it instead of linked:
// rados_dl.cc and curl_dl.cc forward their library's calls through this, and
// say why each library is not linked.
#pragma once

#include <dlfcn.h>

#include <cstddef>
#include <cstdint>

#include "base/status.h"

namespace vmsnap::store::dl {

// SONAME is opened once (RTLD_LOCAL); Symbol is null when the library or
// the symbol is missing, and each forwarding function then fails as its
// library does when it cannot start.
template <const char* Soname>
struct Library {
  static void* Handle() {
    static void* const handle = ::dlopen(Soname, RTLD_NOW | RTLD_LOCAL);
    return handle;
  }
  template <typename Fn>
  static Fn Symbol(const char* name) {
    void* h = Handle();
    return h != nullptr ? reinterpret_cast<Fn>(::dlsym(h, name)) : nullptr;
  }
};

// Ok if libcrypto's SHA-256 (crypto_dl.cc) can be called, else why not.
Status Sha256Available();
// libcrypto's SHA-256 of `len` bytes; only after Sha256Available was Ok.
void Sha256(const uint8_t* data, size_t len, uint8_t out[32]);

}  // namespace vmsnap::store::dl
