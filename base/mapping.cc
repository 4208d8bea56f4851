// SPDX-License-Identifier: MIT
// Memory mappings: see mapping.h.
#include "base/mapping.h"

#include <sys/mman.h>

#include <cerrno>

namespace vmsnap {

Result<Mapping> Mapping::Map(size_t size, int prot, int flags, int fd, off_t offset, std::string_view what) {
  void* p = ::mmap(nullptr, size, prot, flags, fd, offset);
  if (p == MAP_FAILED) return Status::FromErrno(errno, what);
  return Mapping(p, size);
}

Result<Mapping> Mapping::Anonymous(size_t size, std::string_view what) {
  return Map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, what);
}

void Mapping::Reset() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

}  // namespace vmsnap
