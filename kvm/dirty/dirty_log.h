// SPDX-License-Identifier: MIT
// Typed dirty-logging ioctls (bitmap and ring) over a VM fd and vCPU fds:
// KVM_GET_DIRTY_LOG, KVM_CLEAR_DIRTY_LOG, the MANUAL_DIRTY_LOG_PROTECT2 and
// DIRTY_LOG_RING(_ACQ_REL) capabilities, the per-vCPU ring mapping and
// KVM_RESET_DIRTY_RINGS. Errors name the ioctl and the slot or vCPU.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <memory>

#include "base/mapping.h"
#include "base/status.h"
#include "kvm/kvm.h"

namespace vmsnap::kvm::dirty {

// The VM-level dirty-logging calls, behind an interface so trackers can be
// driven by a test double.
class DirtyLogOps {
 public:
  virtual ~DirtyLogOps() = default;
  // KVM_CHECK_EXTENSION on the VM fd.
  virtual Result<int> CheckExtension(long cap) = 0;
  // KVM_SET_USER_MEMORY_REGION for `region` with `flags` (to switch
  // KVM_MEM_LOG_DIRTY_PAGES on or off on an existing slot).
  virtual Status SetSlotFlags(const GuestRegion& region, uint32_t flags) = 0;
  // KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) with `flags`
  // (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, optionally | KVM_DIRTY_LOG_INITIALLY_SET).
  virtual Status EnableManualProtect(uint64_t flags) = 0;
  // KVM_GET_DIRTY_LOG for `slot`. `bitmap` holds one bit per page of the
  // slot, rounded up to whole 64-bit words (KVM writes whole longs).
  virtual Status GetDirtyLog(uint32_t slot, uint64_t* bitmap) = 0;
  // KVM_CLEAR_DIRTY_LOG: re-protects the pages of [first_page,
  // first_page+num_pages) whose bit is set in `bitmap` (bit 0 = first_page).
  // first_page must be a multiple of 64, and num_pages too unless the range
  // ends at the end of the slot.
  virtual Status ClearDirtyLog(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                               const uint64_t* bitmap) = 0;
  // KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING_ACQ_REL or KVM_CAP_DIRTY_LOG_RING)
  // with the per-vCPU ring size in bytes. Only before any vCPU exists.
  virtual Status EnableDirtyRing(uint32_t bytes, bool acq_rel) = 0;
  // KVM_RESET_DIRTY_RINGS: re-protects the pages of every entry marked
  // harvested, in every ring. Returns how many entries were reset.
  virtual Result<int> ResetDirtyRings() = 0;
};

// The real calls on a VM fd (not owned).
class VmDirtyLog final : public DirtyLogOps {
 public:
  explicit VmDirtyLog(int vm_fd) : vm_fd_(vm_fd) {}
  Result<int> CheckExtension(long cap) override;
  Status SetSlotFlags(const GuestRegion& region, uint32_t flags) override;
  Status EnableManualProtect(uint64_t flags) override;
  Status GetDirtyLog(uint32_t slot, uint64_t* bitmap) override;
  Status ClearDirtyLog(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                       const uint64_t* bitmap) override;
  Status EnableDirtyRing(uint32_t bytes, bool acq_rel) override;
  Result<int> ResetDirtyRings() override;

 private:
  int vm_fd_;
};

// One vCPU's dirty ring, mapped from its fd at KVM_DIRTY_LOG_PAGE_OFFSET pages.
// Unmapped on destruction; the vCPU fd must outlive it.
class DirtyRingMapping {
 public:
  static Result<std::unique_ptr<DirtyRingMapping>> Map(int vcpu_fd, uint32_t ring_bytes, int vcpu_index);

  kvm_dirty_gfn* entries() const { return reinterpret_cast<kvm_dirty_gfn*>(map_.data()); }
  uint32_t count() const { return count_; }  // a power of two
  int vcpu_index() const { return vcpu_index_; }

 private:
  DirtyRingMapping(Mapping map, uint32_t count, int vcpu)
      : map_(std::move(map)), count_(count), vcpu_index_(vcpu) {}
  Mapping map_;
  uint32_t count_;
  int vcpu_index_;
};

}  // namespace vmsnap::kvm::dirty
