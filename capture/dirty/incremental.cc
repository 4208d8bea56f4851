// SPDX-License-Identifier: MIT
// Incremental snapshots: see incremental.h.
#include "capture/dirty/incremental.h"

#include <filesystem>

#include "format/reader.h"

namespace vmsnap::capture::dirty {

Result<ParentInfo> ReadParentInfo(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return Status::NotFound("parent snapshot " + path + " does not exist");
  VMSNAP_ASSIGN_OR_RETURN(auto reader, SnapshotReader::Open(path));
  ParentInfo p;
  p.id = reader->id();
  p.path = path;
  auto m = reader->manifest();
  p.depth = m.hasParent() ? m.getParent().getDepth() : 0;
  return p;
}

std::string ParentPathFor(const std::string& parent, const std::string& child) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p = fs::absolute(parent, ec);
  fs::path c = fs::absolute(child, ec);
  fs::path rel = p.lexically_proximate(c.parent_path());
  return rel.empty() ? p.string() : rel.string();
}

Status IncrementalMemory::Feed(std::span<const kvm::GuestRegion> regions, SnapshotWriter& writer) {
  auto ref = writer.manifest().initParent();
  ref.setSnapshotId(capnp::Data::Reader(parent_.id.data(), parent_.id.size()));
  ref.setPath(ParentPathFor(parent_.path, child_path_));
  ref.setDepth(parent_.depth + 1);
  const auto& lregions = layout_.regions();
  for (const kvm::GuestRegion& r : regions) {
    size_t li = 0;
    while (li < lregions.size() && lregions[li].gpa != r.gpa) ++li;
    if (li == lregions.size() || lregions[li].size != r.size) {
      return Status::Internal("incremental snapshot: region " + r.name + " is not in the tracked layout");
    }
    uint64_t n = layout_.region_pages(li);
    uint64_t first = layout_.first_index(li);
    std::vector<uint8_t> defined((n + 7) / 8, 0);
    for (uint64_t p = 0; p < n; ++p) {
      if (pages_.Test(first + p)) defined[p / 8] |= uint8_t(1u << (p % 8));
    }
    VMSNAP_RETURN_IF_ERROR(writer.AddPages(r.gpa, r.host, r.size, defined.data()).Context("memory region " + r.name));
  }
  return Status::Ok();
}

Result<std::unique_ptr<VmDirtyTracking>> VmDirtyTracking::Prepare(int vm_fd, std::optional<Mode> requested,
                                                                  uint32_t ring_bytes) {
  auto t = std::unique_ptr<VmDirtyTracking>(new VmDirtyTracking());
  t->ops_ = std::make_unique<kvm::dirty::VmDirtyLog>(vm_fd);
  VMSNAP_ASSIGN_OR_RETURN(HostSupport host, Probe(*t->ops_));
  Mode mode = requested ? *requested : DefaultMode(host);
  if (mode == Mode::kRing) {
    if (!host.ring) return Status::Unsupported("--dirty-tracking ring: this host's KVM has no dirty ring");
    VMSNAP_ASSIGN_OR_RETURN(t->ring_bytes_, EnableRing(*t->ops_, ring_bytes));
  }
  t->mode_ = mode;
  return t;
}

Status VmDirtyTracking::SetRegions(std::span<const kvm::GuestRegion> regions, uint32_t page_size) {
  if (mode_ == Mode::kOff) return Status::Ok();
  TrackerOptions o;
  o.page_size = page_size;
  o.ring_bytes = ring_bytes_;
  if (mode_ == Mode::kRing) {
    VMSNAP_ASSIGN_OR_RETURN(tracker_, CreateRingTracker(*ops_, regions, o));
  } else {
    VMSNAP_ASSIGN_OR_RETURN(tracker_, CreateBitmapTracker(*ops_, regions, o));
  }
  since_last_ = PageSet(tracker_->layout().total_pages());
  for (auto [fd, idx] : early_vcpus_) VMSNAP_RETURN_IF_ERROR(tracker_->AttachVcpu(fd, idx));
  early_vcpus_.clear();
  return Status::Ok();
}

Status VmDirtyTracking::AttachVcpu(int vcpu_fd, int vcpu_index) {
  if (mode_ == Mode::kOff) return Status::Ok();
  if (!tracker_) {
    early_vcpus_.emplace_back(vcpu_fd, vcpu_index);
    return Status::Ok();
  }
  return tracker_->AttachVcpu(vcpu_fd, vcpu_index);
}

Status VmDirtyTracking::Start() {
  if (!tracker_) return Status::InvalidArgument("dirty tracking is off");
  VMSNAP_RETURN_IF_ERROR(tracker_->Start());
  std::lock_guard lock(mu_);
  since_last_.Reset();
  return Status::Ok();
}

Result<PageSet> VmDirtyTracking::Collect() {
  if (!tracker_) return Status::InvalidArgument("dirty tracking is off");
  PageSet got(tracker_->layout().total_pages());
  VMSNAP_RETURN_IF_ERROR(tracker_->CollectAndRearm(got).status());
  std::lock_guard lock(mu_);
  since_last_.Merge(got);
  return got;
}

Result<PageSet> VmDirtyTracking::TakeSinceLastSnapshot() {
  VMSNAP_RETURN_IF_ERROR(Collect().status());
  std::lock_guard lock(mu_);
  PageSet out = since_last_;
  since_last_.Reset();
  return out;
}

void VmDirtyTracking::GiveBack(const PageSet& pages) {
  std::lock_guard lock(mu_);
  since_last_.Merge(pages);
}

}  // namespace vmsnap::capture::dirty
