// SPDX-License-Identifier: MIT
// libcrypto's SHA-256, loaded on first use instead of linked, for the reason
// rados_dl.cc gives for librados: linking libcrypto.so.3 cost every run of
// `vmsnap` about 125 page faults and 1 ms of CPU before main (its
// relocations and its CPU-feature probe), a quarter of a warm
// `vmsnap load --via`, although only the store names chunks by their hash.
//
// OpenStore checks that it loads (Sha256Available), so no store
// operation hashes without it; librados and libcurl need it themselves.
#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "base/status.h"
#include "store/dl_library.h"

namespace {

constexpr char kSoname[] = "libcrypto.so.3";
using Crypto = vmsnap::store::dl::Library<kSoname>;
// libcrypto's SHA256(data, len, md).
using Sha256Fn = unsigned char* (*)(const unsigned char*, size_t, unsigned char*);

// The symbol, and why it is missing (dlerror's text at the one lookup:
// read later, it would be empty or another library's).
struct Found {
  Sha256Fn fn;
  std::string why;
};
const Found& Sha256Symbol() {
  static const Found found = [] {
    Found f{Crypto::Symbol<Sha256Fn>("SHA256"), ""};
    if (f.fn == nullptr) {
      const char* e = ::dlerror();
      if (e != nullptr) f.why = e;
    }
    return f;
  }();
  return found;
}

}  // namespace

namespace vmsnap::store::dl {

void Sha256(const uint8_t* data, size_t len, uint8_t out[32]) { Sha256Symbol().fn(data, len, out); }

Status Sha256Available() {
  const Found& f = Sha256Symbol();
  if (f.fn != nullptr) return Status::Ok();
  return Status::Unsupported(std::string("the chunk store names chunks by SHA-256, from ") + kSoname +
                             ", which could not be loaded" + (f.why.empty() ? "" : ": " + f.why));
}

}  // namespace vmsnap::store::dl
