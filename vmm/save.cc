// SPDX-License-Identifier: MIT
// Snapshots of the running VM: pause (or not, for a live save), capture,
// resume; from the API, the doorbell port and the control socket alike.
#include <chrono>

#include "vmm/vmm.h"

namespace vmsnap::vmm {
namespace {

std::string Numbered(const std::string& pattern, int n) {
  std::string out = pattern;
  for (size_t pos; (pos = out.find("{n}")) != std::string::npos;) out.replace(pos, 3, std::to_string(n));
  return out;
}

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

Result<capture::CaptureResult> Vmm::CaptureNow(const std::string& path, uint64_t pause_ns,
                                               const capture::dirty::SnapshotPlan& plan,
                                               const CompressionSpec& compression) {
  if (pause_hook_) VMSNAP_RETURN_IF_ERROR(pause_hook_(*memory_));
  capture::CaptureOptions opts;
  opts.tool_version = options_.tool_version;
  opts.loads = loads_;
  opts.pause_ns = pause_ns;
  Apply(compression, opts.writer);
  opts.writer.progress = save_progress_;
  std::vector<kvm::GuestRegion> views = memory_->views();
  return capture::dirty::SavePaused(dirty_.get(), *capturer_, views, path, plan, opts);
}

Result<capture::CaptureResult> Vmm::SavePausedNow(const std::string& path, const capture::dirty::SnapshotPlan& plan,
                                                  const CompressionSpec& compression, bool stop_after) {
  if (threads_.empty()) return CaptureNow(path, 0, plan, compression);
  uint64_t t0 = NowNs();
  RequestPause();
  WaitPaused();
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) {
      --pause_depth_;
      return Status::Internal("the VM stopped before it could be paused");
    }
  }
  auto r = CaptureNow(path, NowNs() - t0, plan, compression);
  if (r.ok() && stop_after) {
    Stop(0, Status::Ok());  // the parked vCPUs see stop_ and end without running
  } else {
    Resume();
  }
  return r;
}

Result<capture::CaptureResult> Vmm::Save(const std::string& path) {
  return SavePausedNow(path, {}, options_.compression);
}

Result<capture::CaptureResult> Vmm::Save(const SaveRequest& request, capture::dirty::LiveStats* live_stats) {
  const CompressionSpec compression = request.compression.value_or(options_.compression);
  capture::dirty::SnapshotPlan plan;
  if (!request.parent.empty()) {
    plan.parent = capture::dirty::ParentMode::kExplicit;
    plan.parent_path = request.parent;
  }
  if (!request.live || threads_.empty()) return SavePausedNow(request.path, plan, compression, request.stop);
  capture::CaptureOptions opts;
  opts.tool_version = options_.tool_version;
  opts.loads = loads_;
  Apply(compression, opts.writer);
  opts.writer.progress = save_progress_;
  // SaveLive pauses once, for the last round, and resumes before it writes
  // the file. With `stop` the VM stays paused instead: it ends once the
  // file is written, or resumes if the save failed.
  const bool stop = request.stop;
  capture::dirty::LivePause vm{[this] {
                                 RequestPause();
                                 WaitPaused();
                               },
                               [this, stop] {
                                 if (!stop) Resume();
                               }};
  auto r = capture::dirty::SaveLive(dirty_.get(), *capturer_, request.path, plan, opts, vm,
                                    capture::dirty::LiveOptions{}, live_stats);
  if (stop) {
    if (r.ok()) {
      Stop(0, Status::Ok());
    } else {
      Resume();
    }
  }
  return r;
}

Status Vmm::HandleDoorbell() {
  // The ringing vCPU already requested the pause (HandleExit).
  uint64_t t0 = NowNs();
  ++doorbell_seq_;
  WaitPaused();
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) return Status::Ok();
  }
  Status s;
  if (!options_.doorbell_snapshot.empty()) {
    std::string path = Numbered(options_.doorbell_snapshot, doorbell_seq_);
    if (options_.doorbell_progress) save_progress_ = options_.doorbell_progress();
    capture::dirty::SnapshotPlan plan;
    if (options_.incremental) plan.parent = capture::dirty::ParentMode::kAuto;
    auto r = CaptureNow(path, NowNs() - t0, plan, options_.compression);
    save_progress_ = nullptr;  // a bar it owns is finished and cleared here
    if (!r.ok()) s = r.status().Context("snapshot on doorbell " + std::to_string(doorbell_seq_));
  }
  Resume();
  return s;
}

}  // namespace vmsnap::vmm
