// SPDX-License-Identifier: MIT
// What every object store shares: "only if absent" for stores that cannot
// write so, and the marks gc reads (see object_store.h).
#include "store/object_store.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>

namespace vmsnap::store {

// A store that cannot write "only if absent" asks first: a plain write
// would replace an object gc may be deleting, and could not tell the caller
// whether the bytes were there. A chunk gc removes between the two is
// written again.
Result<bool> ObjectStore::Ensure(const std::string& name, std::span<const uint8_t> data, const std::string& mark,
                                 bool likely_new) {
  (void)likely_new;
  Status s = Touch(name, mark);
  if (s.ok()) return false;
  if (s.code() != Code::kNotFound) return s;
  VMSNAP_RETURN_IF_ERROR(Put(name, data, mark));
  return true;
}

std::string NewMark() {
  std::random_device rd;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lld %08x%08x", static_cast<long long>(std::time(nullptr)), rd(), rd());
  return buf;
}

int64_t MarkTime(const std::string& mark) { return std::atoll(mark.c_str()); }

}  // namespace vmsnap::store
