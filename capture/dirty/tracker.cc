// SPDX-License-Identifier: MIT
// The tracker base (masking, re-arm bookkeeping, VMM marks) and host probing:
// see tracker.h.
#include "capture/dirty/tracker.h"

namespace vmsnap::capture::dirty {

Status SlotDirtyLogging::Enable(kvm::dirty::DirtyLogOps& ops,
                                const std::vector<kvm::GuestRegion>& regions) {
  added_.assign(regions.size(), false);
  for (size_t i = 0; i < regions.size(); ++i) {
    if (!(regions[i].flags & KVM_MEM_LOG_DIRTY_PAGES)) {
      VMSNAP_RETURN_IF_ERROR(ops.SetSlotFlags(regions[i], regions[i].flags | KVM_MEM_LOG_DIRTY_PAGES));
      added_[i] = true;
    }
  }
  return Status::Ok();
}

Status SlotDirtyLogging::Disable(kvm::dirty::DirtyLogOps& ops,
                                 const std::vector<kvm::GuestRegion>& regions) {
  for (size_t i = 0; i < regions.size() && i < added_.size(); ++i) {
    if (added_[i]) VMSNAP_RETURN_IF_ERROR(ops.SetSlotFlags(regions[i], regions[i].flags));
  }
  added_.clear();
  return Status::Ok();
}

std::string_view ModeName(Mode m) {
  switch (m) {
    case Mode::kOff: return "off";
    case Mode::kBitmap: return "bitmap";
    case Mode::kRing: return "ring";
  }
  return "?";
}

Result<Mode> ParseMode(std::string_view s) {
  if (s == "ring") return Mode::kRing;
  if (s == "bitmap") return Mode::kBitmap;
  if (s == "off") return Mode::kOff;
  return Status::InvalidArgument("dirty tracking mode '" + std::string(s) + "': expected ring, bitmap or off");
}

Result<HostSupport> Probe(kvm::dirty::DirtyLogOps& ops) {
  HostSupport h;
  VMSNAP_ASSIGN_OR_RETURN(int acq, ops.CheckExtension(KVM_CAP_DIRTY_LOG_RING_ACQ_REL));
  VMSNAP_ASSIGN_OR_RETURN(int plain, ops.CheckExtension(KVM_CAP_DIRTY_LOG_RING));
  // Both answer with the maximum ring size in bytes.
  h.ring_acq_rel = acq > 0;
  h.ring = acq > 0 || plain > 0;
  h.ring_max_bytes = static_cast<uint32_t>(acq > 0 ? acq : plain);
  VMSNAP_ASSIGN_OR_RETURN(int mp, ops.CheckExtension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2));
  h.manual_protect = mp > 0 ? static_cast<uint64_t>(mp) : 0;
  return h;
}

Mode DefaultMode(const HostSupport& host) { return host.ring ? Mode::kRing : Mode::kBitmap; }

DirtyTracker::DirtyTracker(PageLayout layout)
    : layout_(std::move(layout)),
      reported_(layout_.total_pages()),
      marked_(layout_.total_pages()),
      scratch_(layout_.total_pages()) {}

Result<uint64_t> DirtyTracker::Collect(PageSet& out) {
  std::lock_guard lock(mu_);
  scratch_.Reset();
  VMSNAP_RETURN_IF_ERROR(HarvestLocked(scratch_));
  // A reported page stays quiet until re-armed; the VMM's own writes are
  // always reported.
  scratch_.Subtract(reported_);
  scratch_.Merge(marked_);
  marked_.Reset();
  reported_.Merge(scratch_);
  out.Merge(scratch_);
  return scratch_.Count();
}

Status DirtyTracker::Rearm(const PageSet& pages) {
  std::lock_guard lock(mu_);
  VMSNAP_RETURN_IF_ERROR(RearmLocked(pages));
  reported_.Subtract(pages);
  return Status::Ok();
}

Status DirtyTracker::RearmAll() {
  std::lock_guard lock(mu_);
  VMSNAP_RETURN_IF_ERROR(RearmLocked(reported_));
  reported_.Reset();
  return Status::Ok();
}

Result<uint64_t> DirtyTracker::CollectAndRearm(PageSet& out) {
  PageSet got(layout_.total_pages());
  VMSNAP_ASSIGN_OR_RETURN(uint64_t n, Collect(got));
  VMSNAP_RETURN_IF_ERROR(Rearm(got));
  out.Merge(got);
  return n;
}

void DirtyTracker::MarkDirty(uint64_t gpa, uint64_t len) {
  if (len == 0) return;
  std::lock_guard lock(mu_);
  uint64_t ps = layout_.page_size();
  for (uint64_t a = gpa / ps * ps; a < gpa + len; a += ps) {
    if (auto i = layout_.IndexOfGpa(a)) marked_.Set(*i);
  }
}

}  // namespace vmsnap::capture::dirty
