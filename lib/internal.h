// SPDX-License-Identifier: MIT
// What the C API's source files share: the handle structs behind the opaque
// types of include/vmsnap/vmsnap.h and the per-thread last error.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "format/chain.h"
#include "base/hex.h"
#include "base/status.h"
#include "format/writer.h"
#include <kj/exception.h>
#include "include/vmsnap/vmsnap.h"

namespace vmsnap::capi {

// Records STATUS as the thread's last error and returns its C code.
int Fail(const Status& status);
// Clears the last error and returns VMSNAP_OK.
int Ok();
int Invalid(const std::string& message);

// Answers a state query of SIZE bytes at DATA into the caller's buffer.
int CopyOut(const void* data, size_t size, void* buf, size_t buf_size, size_t* size_out);

schema::Arch ToSchema(vmsnap_arch arch);
vmsnap_arch FromSchema(schema::Arch arch);

}  // namespace vmsnap::capi

#define VMSNAP_CHECK_ARG(cond, what) \
  do {                               \
    if (!(cond)) return Invalid(what); \
  } while (0)

// Nothing may throw across the C boundary: Cap'n Proto reports malformed
// data and exhausted limits with exceptions, std:: with bad_alloc.
#define VMSNAP_GUARD_BEGIN try {
#define VMSNAP_GUARD_END                                                        \
  }                                                                            \
  catch (const std::bad_alloc&) {                                              \
    return Fail(Status::Internal("out of memory"));                            \
  }                                                                            \
  catch (const kj::Exception& e) {                                             \
    return Fail(Status::Corruption(std::string("malformed manifest: ") + e.getDescription().cStr())); \
  }                                                                            \
  catch (const std::exception& e) {                                            \
    return Fail(Status::Internal(e.what()));                                   \
  }

struct vmsnap_snapshot {
  std::shared_ptr<const vmsnap::SnapshotChain> chain;
  std::string path;
  // Region names and device records point into the manifest, which the chain
  // owns; nothing else needs caching.
};
