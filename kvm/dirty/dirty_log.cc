// SPDX-License-Identifier: MIT
// Typed dirty-logging ioctls: see dirty_log.h.
#include "kvm/dirty/dirty_log.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "kvm/kvm.h"

namespace vmsnap::kvm::dirty {

Result<int> VmDirtyLog::CheckExtension(long cap) {
  return Ioctl(vm_fd_, KVM_CHECK_EXTENSION, reinterpret_cast<void*>(cap), "KVM_CHECK_EXTENSION (VM)");
}

Status VmDirtyLog::SetSlotFlags(const GuestRegion& region, uint32_t flags) {
  kvm_userspace_memory_region r{};
  r.slot = region.slot;
  r.flags = flags;
  r.guest_phys_addr = region.gpa;
  r.memory_size = region.size;
  r.userspace_addr = reinterpret_cast<uint64_t>(region.host);
  return Ioctl(vm_fd_, KVM_SET_USER_MEMORY_REGION, &r, "KVM_SET_USER_MEMORY_REGION",
               " (slot " + std::to_string(region.slot) + ", flags " + std::to_string(flags) + ")")
      .status();
}

Status VmDirtyLog::EnableManualProtect(uint64_t flags) {
  kvm_enable_cap c{};
  c.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
  c.args[0] = flags;
  return Ioctl(vm_fd_, KVM_ENABLE_CAP, &c, "KVM_ENABLE_CAP(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)").status();
}

Status VmDirtyLog::GetDirtyLog(uint32_t slot, uint64_t* bitmap) {
  kvm_dirty_log log{};
  log.slot = slot;
  log.dirty_bitmap = bitmap;
  return Ioctl(vm_fd_, KVM_GET_DIRTY_LOG, &log, "KVM_GET_DIRTY_LOG", " (slot " + std::to_string(slot) + ")")
      .status();
}

Status VmDirtyLog::ClearDirtyLog(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                                 const uint64_t* bitmap) {
  kvm_clear_dirty_log c{};
  c.slot = slot;
  c.first_page = first_page;
  c.num_pages = num_pages;
  // KVM only reads the bitmap; the uapi struct is not const-qualified.
  c.dirty_bitmap = const_cast<uint64_t*>(bitmap);
  return Ioctl(vm_fd_, KVM_CLEAR_DIRTY_LOG, &c, "KVM_CLEAR_DIRTY_LOG",
               " (slot " + std::to_string(slot) + ", pages " + std::to_string(first_page) + "+" +
                   std::to_string(num_pages) + ")")
      .status();
}

Status VmDirtyLog::EnableDirtyRing(uint32_t bytes, bool acq_rel) {
  kvm_enable_cap c{};
  c.cap = acq_rel ? KVM_CAP_DIRTY_LOG_RING_ACQ_REL : KVM_CAP_DIRTY_LOG_RING;
  c.args[0] = bytes;
  return Ioctl(vm_fd_, KVM_ENABLE_CAP, &c,
               acq_rel ? "KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING_ACQ_REL)" : "KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING)",
               " (" + std::to_string(bytes) + " bytes per vCPU)")
      .status();
}

Result<int> VmDirtyLog::ResetDirtyRings() {
  return Ioctl(vm_fd_, KVM_RESET_DIRTY_RINGS, nullptr, "KVM_RESET_DIRTY_RINGS");
}

Result<std::unique_ptr<DirtyRingMapping>> DirtyRingMapping::Map(int vcpu_fd, uint32_t ring_bytes,
                                                                int vcpu_index) {
  if (ring_bytes == 0 || (ring_bytes & (ring_bytes - 1)) != 0) {
    return Status::InvalidArgument("dirty ring size " + std::to_string(ring_bytes) + " is not a power of two");
  }
  long page = ::sysconf(_SC_PAGESIZE);
  off_t offset = static_cast<off_t>(KVM_DIRTY_LOG_PAGE_OFFSET) * page;
  auto map = Mapping::Map(ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, offset,
                          "mmap of the dirty ring on vCPU " + std::to_string(vcpu_index));
  if (!map.ok()) return Status(Code::kKvm, map.status().message());
  return std::unique_ptr<DirtyRingMapping>(new DirtyRingMapping(
      std::move(map).value(), ring_bytes / static_cast<uint32_t>(sizeof(kvm_dirty_gfn)), vcpu_index));
}

}  // namespace vmsnap::kvm::dirty
