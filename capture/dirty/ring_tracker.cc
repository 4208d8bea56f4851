// SPDX-License-Identifier: MIT
// The dirty-ring tracker: one ring per vCPU, mapped from the vCPU fd; entries
// harvested strictly in order (acquire load of flags), marked harvested
// (release store of KVM_DIRTY_GFN_F_RESET), then KVM_RESET_DIRTY_RINGS
// re-protects them before anyone reads the pages.
#include <atomic>

#include "capture/dirty/tracker.h"

namespace vmsnap::capture::dirty {
namespace {

// 16384 entries per vCPU: fewer ring-full exits, and fewer chances of the
// overflow described in HarvestRingsLocked.
constexpr uint32_t kDefaultRingBytes = 256 * 1024;

class RingTracker final : public DirtyTracker {
 public:
  RingTracker(kvm::dirty::DirtyLogOps& ops, PageLayout layout, uint32_t ring_bytes)
      : DirtyTracker(std::move(layout)), ops_(ops), ring_bytes_(ring_bytes), full_pending_(layout_.total_pages()) {}

  Mode mode() const override { return Mode::kRing; }

  Status AttachVcpu(int vcpu_fd, int vcpu_index) override {
    VMSNAP_ASSIGN_OR_RETURN(auto map, kvm::dirty::DirtyRingMapping::Map(vcpu_fd, ring_bytes_, vcpu_index));
    std::lock_guard lock(mu_);
    rings_.push_back(Ring{std::move(map), 0});
    return Status::Ok();
  }

  Status Start() override {
    std::lock_guard lock(mu_);
    VMSNAP_RETURN_IF_ERROR(logging_.Enable(ops_, layout_.regions()));
    scratch_.Reset();
    VMSNAP_RETURN_IF_ERROR(HarvestLocked(scratch_));
    reported_.Reset();
    marked_.Reset();
    return Status::Ok();
  }

  Status Stop() override {
    std::lock_guard lock(mu_);
    return logging_.Disable(ops_, layout_.regions());
  }

  Status HandleRingFull(int vcpu_index) override {
    ring_full_exits_.fetch_add(1);
    std::lock_guard lock(mu_);
    const bool mine = vcpu_index >= 0 && size_t(vcpu_index) < rings_.size();
    const uint32_t before = mine ? rings_[vcpu_index].fetch : 0;
    VMSNAP_RETURN_IF_ERROR(HarvestRingsLocked(full_pending_));
    if (mine && rings_[vcpu_index].fetch == before) return Unstick(rings_[vcpu_index]);
    return Status::Ok();
  }

 protected:
  Status HarvestLocked(PageSet& found) override {
    VMSNAP_RETURN_IF_ERROR(HarvestRingsLocked(found));
    found.Merge(full_pending_);
    full_pending_.Reset();
    return Status::Ok();
  }

  // The ring re-protects every page when it is reset; re-arming is bookkeeping.
  Status RearmLocked(const PageSet&) override { return Status::Ok(); }

 private:
  struct Ring {
    std::unique_ptr<kvm::dirty::DirtyRingMapping> map;
    uint32_t fetch = 0;  // free-running, like the kernel's indexes
    bool desync = false; // KVM overflowed this ring once
  };

  Status HarvestRingsLocked(PageSet& found) {
    uint64_t harvested = 0;
    for (Ring& ring : rings_) {
      kvm_dirty_gfn* e = ring.map->entries();
      uint32_t count = ring.map->count();
      uint32_t mask = count - 1;
      uint32_t n = 0;
      for (;;) {
        kvm_dirty_gfn& g = e[ring.fetch & mask];
        // Acquire pairs with KVM's release when it publishes the entry, so
        // slot and offset are read after the flag says they are valid.
        uint32_t flags = std::atomic_ref<uint32_t>(g.flags).load(std::memory_order_acquire);
        if (!(flags & KVM_DIRTY_GFN_F_DIRTY)) {
          if (ring.desync && n < count && Resync(ring)) continue;
          break;
        }
        if (auto i = layout_.IndexOfSlotPage(g.slot, g.offset)) found.Set(*i);
        // Release: our reads of the entry happen before KVM may reuse it.
        std::atomic_ref<uint32_t>(g.flags).store(KVM_DIRTY_GFN_F_RESET, std::memory_order_release);
        ++ring.fetch;
        ++harvested;
        ++n;
      }
      if (n >= count) {
        // Every slot was dirty: KVM filled the ring past its soft limit and
        // may have overwritten entries (it happens when a vCPU dirties pages
        // inside an in-kernel emulation burst and only checks for a full
        // ring afterwards). Those pages are unknown, so report every page,
        // and from now on look past KVM's index gap (Resync).
        LoseTrack(ring);
      }
    }
    if (harvested) VMSNAP_RETURN_IF_ERROR(ops_.ResetDirtyRings().status());
    return Status::Ok();
  }

  // KVM says the ring of the vCPU that exited is full, yet no entry in it is
  // published: on this host's software-assisted KVM an emulation burst can
  // count pushes it never wrote. KVM's reset index equals our fetch index
  // (we only ever mark entries harvested in order from it, and the reset
  // consumes exactly those), so marking the next entries harvested and
  // resetting moves KVM's reset index on until the vCPU may run again. KVM's
  // dirty index is at least the soft limit ahead (the ring size minus a
  // reserve of at most 576 entries on x86), so half a ring of 2048 entries or
  // more, else a quarter, per exit can never pass it. Only
  // this vCPU's ring is touched: the vCPU is out of KVM_RUN, so KVM is not
  // writing to it. The pages those pushes stood for are unknown, so every
  // page is reported dirty, as after an overflow.
  Status Unstick(Ring& ring) {
    const uint32_t count = ring.map->count();
    MarkHarvested(ring, count >= 2048 ? count / 2 : count / 4);
    LoseTrack(ring);
    return ops_.ResetDirtyRings().status();
  }

  // After an overflow KVM's next entry may sit beyond our fetch index, with
  // cleared entries between. Finds the next published entry in ring order,
  // marks the gap harvested (KVM resets entries strictly in order, so the gap
  // must be passed for the ring to drain) and moves the fetch index to it.
  bool Resync(Ring& ring) {
    kvm_dirty_gfn* e = ring.map->entries();
    uint32_t count = ring.map->count();
    uint32_t mask = count - 1;
    for (uint32_t i = 1; i < count; ++i) {
      uint32_t flags = std::atomic_ref<uint32_t>(e[(ring.fetch + i) & mask].flags).load(std::memory_order_acquire);
      if (flags & KVM_DIRTY_GFN_F_DIRTY) {
        MarkHarvested(ring, i);
        return true;
      }
    }
    return false;
  }

  // Marks the next `n` entries from the fetch index harvested, whatever they
  // hold, and moves the fetch index past them.
  static void MarkHarvested(Ring& ring, uint32_t n) {
    kvm_dirty_gfn* e = ring.map->entries();
    const uint32_t mask = ring.map->count() - 1;
    for (uint32_t k = 0; k < n; ++k) {
      std::atomic_ref<uint32_t>(e[(ring.fetch + k) & mask].flags)
          .store(KVM_DIRTY_GFN_F_RESET, std::memory_order_release);
    }
    ring.fetch += n;
  }

  // Entries of this ring were lost or skipped: the pages they stood for are
  // unknown, so every page counts as dirty, and from now on the harvest looks
  // past gaps in the ring (Resync).
  void LoseTrack(Ring& ring) {
    ring.desync = true;
    ring_overflows_.fetch_add(1);
    marked_.SetAll();
  }

  kvm::dirty::DirtyLogOps& ops_;
  uint32_t ring_bytes_;
  std::vector<Ring> rings_;
  SlotDirtyLogging logging_;
  PageSet full_pending_;  // harvested on ring-full exits, not collected yet
};

}  // namespace

Result<uint32_t> EnableRing(kvm::dirty::DirtyLogOps& ops, uint32_t bytes) {
  VMSNAP_ASSIGN_OR_RETURN(HostSupport host, Probe(ops));
  if (!host.ring) return Status::Unsupported("this host's KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)");
  if (bytes == 0) bytes = kDefaultRingBytes;
  if (host.ring_max_bytes && bytes > host.ring_max_bytes) bytes = host.ring_max_bytes;
  VMSNAP_RETURN_IF_ERROR(ops.EnableDirtyRing(bytes, host.ring_acq_rel));
  return bytes;
}

Result<std::unique_ptr<DirtyTracker>> CreateRingTracker(kvm::dirty::DirtyLogOps& ops,
                                                        std::span<const kvm::GuestRegion> regions,
                                                        const TrackerOptions& options) {
  uint32_t bytes = options.ring_bytes ? options.ring_bytes : kDefaultRingBytes;
  return std::unique_ptr<DirtyTracker>(new RingTracker(ops, PageLayout(regions, options.page_size), bytes));
}

}  // namespace vmsnap::capture::dirty
