// SPDX-License-Identifier: MIT
// Guest RAM as objects the VMM owns: each region knows its host mapping,
// guest-physical address, size, KVM slot and flags, and is backed by
// anonymous memory or by a file mapped MAP_SHARED (--mem-file).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/mapping.h"
#include "base/status.h"
#include "kvm/kvm.h"

namespace vmsnap::vmm {

// Guest RAM above this goes above 4 GiB, leaving the hole for the LAPIC,
// IOAPIC and KVM's TSS/identity-map pages.
inline constexpr uint64_t kLowMemEnd = 0xC0000000ull;
inline constexpr uint64_t kHighMemStart = 0x100000000ull;

class MemoryRegion {
 public:
  MemoryRegion(const MemoryRegion&) = delete;
  MemoryRegion& operator=(const MemoryRegion&) = delete;

  const kvm::GuestRegion& view() const { return view_; }
  uint8_t* host() const { return view_.host; }
  uint64_t gpa() const { return view_.gpa; }
  uint64_t size() const { return view_.size; }
  uint32_t slot() const { return view_.slot; }
  uint32_t flags() const { return view_.flags; }
  bool file_backed() const { return file_backed_; }

 private:
  friend class GuestMemory;
  MemoryRegion() = default;
  kvm::GuestRegion view_;
  Mapping map_;
  bool file_backed_ = false;
};

class GuestMemory {
 public:
  // RAM of `size` bytes from guest-physical 0 (split around the hole below
  // 4 GiB), anonymous, or backed by `file` (whose size is the RAM size) when
  // `file` is not empty.
  static Result<std::unique_ptr<GuestMemory>> Create(uint64_t size, const std::string& file);
  // Regions exactly as a snapshot's memory map describes them, anonymous.
  static Result<std::unique_ptr<GuestMemory>> CreateRegions(const std::vector<kvm::GuestRegion>& layout);

  const std::vector<std::unique_ptr<MemoryRegion>>& regions() const { return regions_; }
  std::vector<kvm::GuestRegion> views() const;
  uint64_t total_size() const;
  // Highest guest-physical address + 1.
  uint64_t top() const;
  // Host pointer for [gpa, gpa+len) if one region holds all of it, else null.
  uint8_t* HostPtr(uint64_t gpa, uint64_t len) const;

 private:
  Status AddRegion(int fd, uint64_t file_offset, uint64_t gpa, uint64_t size, uint32_t slot, uint32_t flags,
                   const std::string& name);
  std::vector<std::unique_ptr<MemoryRegion>> regions_;
  UniqueFd file_;
};

}  // namespace vmsnap::vmm
