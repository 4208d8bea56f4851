// SPDX-License-Identifier: MIT
// The one owner of a memory mapping (guest RAM, kvm_run, dirty rings, mapped
// snapshot files, shadow copies): unmaps it when it goes out of scope.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>

#include "base/status.h"

namespace vmsnap {

class Mapping {
 public:
  Mapping() = default;
  // Adopts a mapping that mmap returned.
  Mapping(void* addr, size_t size) : addr_(addr), size_(size) {}
  Mapping(Mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      Reset();
      addr_ = std::exchange(o.addr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { Reset(); }

  // mmap(2) of `size` bytes; a failure is Status::FromErrno(errno, what).
  static Result<Mapping> Map(size_t size, int prot, int flags, int fd, off_t offset, std::string_view what);
  // Private anonymous read-write memory, not reserved up front: pages that
  // are never touched cost nothing.
  static Result<Mapping> Anonymous(size_t size, std::string_view what);

  uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
  size_t size() const { return size_; }
  bool valid() const { return addr_ != nullptr; }
  void Reset();

 private:
  void* addr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace vmsnap
