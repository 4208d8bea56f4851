// SPDX-License-Identifier: MIT
// Guest memory held in a test buffer, for tests of what reads guest-physical
// memory (the page walker, the forensic exporters).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "guest/memory.h"

namespace vmsnap::guest::testing {

// One region of guest memory at gpa 0.
class BufferMemory : public PhysicalMemory {
 public:
  explicit BufferMemory(uint64_t size) : bytes_(size), regions_{{0, size, "ram"}} {}
  const std::vector<Region>& regions() const override { return regions_; }
  Status Read(uint64_t gpa, uint64_t len, uint8_t* out) const override {
    VMSNAP_RETURN_IF_ERROR(CheckInside(regions_, gpa, len));
    std::memcpy(out, bytes_.data() + gpa, len);
    ++reads;
    return Status::Ok();
  }
  void Put(uint64_t gpa, uint64_t v, unsigned n = 8) {
    for (unsigned i = 0; i < n; ++i) bytes_[gpa + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  mutable int reads = 0;

 private:
  std::vector<uint8_t> bytes_;
  std::vector<Region> regions_;
};

}  // namespace vmsnap::guest::testing
