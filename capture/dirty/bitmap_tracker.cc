// SPDX-License-Identifier: MIT
// The dirty-bitmap tracker: KVM_MEM_LOG_DIRTY_PAGES on each slot,
// KVM_GET_DIRTY_LOG to read, and with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2
// KVM_CLEAR_DIRTY_LOG to re-protect only the pages the caller re-arms.
#include <algorithm>

#include "capture/dirty/tracker.h"

namespace vmsnap::capture::dirty {
namespace {

class BitmapTracker final : public DirtyTracker {
 public:
  BitmapTracker(kvm::dirty::DirtyLogOps& ops, PageLayout layout, bool manual)
      : DirtyTracker(std::move(layout)), ops_(ops), manual_(manual) {}

  Mode mode() const override { return Mode::kBitmap; }

  Status Start() override {
    std::lock_guard lock(mu_);
    VMSNAP_RETURN_IF_ERROR(logging_.Enable(ops_, layout_.regions()));
    // Forget what was logged before and arm every page. With
    // KVM_DIRTY_LOG_INITIALLY_SET a freshly logged slot starts all-dirty and
    // unprotected, so this clear is what write-protects it.
    scratch_.Reset();
    VMSNAP_RETURN_IF_ERROR(HarvestLocked(scratch_));
    VMSNAP_RETURN_IF_ERROR(RearmLocked(scratch_));
    reported_.Reset();
    marked_.Reset();
    return Status::Ok();
  }

  Status Stop() override {
    std::lock_guard lock(mu_);
    return logging_.Disable(ops_, layout_.regions());
  }

 protected:
  Status HarvestLocked(PageSet& found) override {
    const auto& regions = layout_.regions();
    for (size_t r = 0; r < regions.size(); ++r) {
      uint64_t pages = layout_.region_pages(r);
      buf_.assign((pages + 63) / 64, 0);
      VMSNAP_RETURN_IF_ERROR(ops_.GetDirtyLog(regions[r].slot, buf_.data()));
      uint64_t first = layout_.first_index(r);
      for (size_t w = 0; w < buf_.size(); ++w) {
        uint64_t bits = buf_[w];
        while (bits) {
          uint64_t p = uint64_t(w) * 64 + uint64_t(std::countr_zero(bits));
          bits &= bits - 1;
          if (p < pages) found.Set(first + p);
        }
      }
    }
    return Status::Ok();
  }

  Status RearmLocked(const PageSet& pages) override {
    // Without manual protect, KVM_GET_DIRTY_LOG already re-protected them.
    if (!manual_) return Status::Ok();
    const auto& regions = layout_.regions();
    for (size_t r = 0; r < regions.size(); ++r) {
      uint64_t n = layout_.region_pages(r);
      uint64_t first = layout_.first_index(r);
      buf_.assign((n + 63) / 64, 0);
      for (uint64_t p = 0; p < n; ++p) {
        if (pages.Test(first + p)) buf_[p / 64] |= uint64_t{1} << (p % 64);
      }
      // One KVM_CLEAR_DIRTY_LOG per run of non-empty 64-page words: ranges
      // start 64-aligned and are 64-page multiples or end at the slot's end.
      size_t w = 0;
      while (w < buf_.size()) {
        if (!buf_[w]) { ++w; continue; }
        size_t end = w;
        while (end < buf_.size() && buf_[end]) ++end;
        uint64_t first_page = uint64_t(w) * 64;
        uint64_t last = std::min<uint64_t>(uint64_t(end) * 64, n);
        VMSNAP_RETURN_IF_ERROR(ops_.ClearDirtyLog(regions[r].slot, first_page,
                                                  static_cast<uint32_t>(last - first_page), &buf_[w]));
        w = end;
      }
    }
    return Status::Ok();
  }

 private:
  kvm::dirty::DirtyLogOps& ops_;
  bool manual_;
  SlotDirtyLogging logging_;
  std::vector<uint64_t> buf_;
};

}  // namespace

Result<std::unique_ptr<DirtyTracker>> CreateBitmapTracker(kvm::dirty::DirtyLogOps& ops,
                                                          std::span<const kvm::GuestRegion> regions,
                                                          const TrackerOptions& options) {
  VMSNAP_ASSIGN_OR_RETURN(HostSupport host, Probe(ops));
  bool manual = false;
  if (host.manual_protect & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) {
    uint64_t flags = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | (host.manual_protect & KVM_DIRTY_LOG_INITIALLY_SET);
    VMSNAP_RETURN_IF_ERROR(ops.EnableManualProtect(flags));
    manual = true;
  }
  return std::unique_ptr<DirtyTracker>(new BitmapTracker(ops, PageLayout(regions, options.page_size), manual));
}

}  // namespace vmsnap::capture::dirty
