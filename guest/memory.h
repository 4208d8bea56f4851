// SPDX-License-Identifier: MIT
// Guest-physical memory as the forensic tools see it: the merged memory of a
// snapshot chain, bounded by the leaf's memory regions.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/hex.h"
#include "format/chain.h"
#include "base/status.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::guest {

struct Region {
  uint64_t gpa = 0;
  uint64_t size = 0;
  std::string name;
  uint64_t end() const { return gpa + size; }
};

// The manifest's memory regions, sorted by address. Regions of size zero are
// dropped. Corruption when a region wraps past 2^64 or two regions overlap.
Result<std::vector<Region>> RegionsOf(schema::Manifest::Reader manifest);

// Ok when every byte of [gpa, gpa+len) lies in some region; otherwise an
// InvalidArgument naming the first address outside guest memory.
Status CheckInside(const std::vector<Region>& regions, uint64_t gpa, uint64_t len);

// Reads guest-physical memory. Implementations check the range against their
// regions first, so a read never silently returns bytes of a hole.
class PhysicalMemory {
 public:
  virtual ~PhysicalMemory() = default;
  virtual const std::vector<Region>& regions() const = 0;
  virtual Status Read(uint64_t gpa, uint64_t len, uint8_t* out) const = 0;
};

// PhysicalMemory over a SnapshotChain (which must outlive it).
class ChainMemory final : public PhysicalMemory {
 public:
  static Result<std::unique_ptr<ChainMemory>> Create(const SnapshotChain& chain);
  const std::vector<Region>& regions() const override { return regions_; }
  Status Read(uint64_t gpa, uint64_t len, uint8_t* out) const override;

 private:
  ChainMemory(const SnapshotChain& chain, std::vector<Region> regions)
      : chain_(chain), regions_(std::move(regions)) {}
  const SnapshotChain& chain_;
  std::vector<Region> regions_;
};

}  // namespace vmsnap::guest
