// SPDX-License-Identifier: MIT
// Snapshots of the running VM: pause (or not, for a live save), capture,
// resume; from the API, the doorbell port and the control socket alike.
#include <chrono>
#include <cstring>

#include "lib/cxx.h"
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

void OnSaveProgress(uint64_t done, uint64_t total, void* ctx) { (*static_cast<ProgressFn*>(ctx))(done, total); }

// A live save's pause and resume, as the C API calls them.
struct LiveVm {
  Vmm* vmm;
  bool stop;  // stay paused after the last round (`save --stop`)
};
void LivePauseFn(void* ctx) {
  auto* l = static_cast<LiveVm*>(ctx);
  l->vmm->RequestPause();
  l->vmm->WaitPaused();
}
void LiveResumeFn(void* ctx) {
  auto* l = static_cast<LiveVm*>(ctx);
  if (!l->stop) l->vmm->Resume();
}

}  // namespace

Result<capture::CaptureResult> Vmm::ApiSave(const std::string& path, vmsnap_save_options o,
                                            const CompressionSpec& compression, capture::dirty::LiveStats* stats) {
  const std::string codec = ToString(compression);
  o.struct_size = sizeof o;
  o.compression = codec.c_str();
  o.tool_version = options_.tool_version.c_str();
  o.progress = save_progress_ ? OnSaveProgress : nullptr;
  o.progress_ctx = &save_progress_;
  std::vector<vmsnap_load_record> loads(loads_.size());
  for (size_t i = 0; i < loads_.size(); ++i) {
    vmsnap_load_record& l = loads[i];
    std::memcpy(l.generation_id, loads_[i].generation_id.data(), sizeof l.generation_id);
    l.booted = loads_[i].snapshot_id ? 0 : 1;
    if (loads_[i].snapshot_id) std::memcpy(l.snapshot_id, loads_[i].snapshot_id->data(), sizeof l.snapshot_id);
    l.warm = loads_[i].warm ? 1 : 0;
    l.time_unix_ns = loads_[i].time_unix_ns;
  }
  o.loads = loads.data();
  o.load_count = static_cast<uint32_t>(loads.size());
  vmsnap_save_result r{};
  r.struct_size = sizeof r;
  if (int rc = vmsnap_vm_save(api_, path.c_str(), &o, &r)) return capi::StatusOf(rc);
  if (stats) {
    stats->rounds = r.rounds;
    stats->pause_ns = r.pause_ns;
  }
  capture::CaptureResult out;
  out.path = path;
  out.file_size = r.file_size;
  std::memcpy(out.id.data(), r.id, sizeof r.id);
  return out;
}

Result<capture::CaptureResult> Vmm::CaptureNow(const std::string& path, uint64_t pause_ns,
                                               const capture::dirty::SnapshotPlan& plan,
                                               const CompressionSpec& compression) {
  if (pause_hook_) VMSNAP_RETURN_IF_ERROR(pause_hook_(*memory_));
  vmsnap_save_options o{};
  o.flags = plan.parent == capture::dirty::ParentMode::kAuto ? VMSNAP_SAVE_INCREMENTAL : 0u;
  if (plan.parent == capture::dirty::ParentMode::kExplicit) o.parent = plan.parent_path.c_str();
  o.pause_ns = pause_ns;
  return ApiSave(path, o, compression, nullptr);
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
  // The live save pauses once, for the last round, and resumes before it
  // writes the file. With `stop` the VM stays paused instead: it ends once
  // the file is written, or resumes if the save failed.
  const bool stop = request.stop;
  LiveVm live{this, stop};
  vmsnap_save_options o{};
  o.flags = VMSNAP_SAVE_LIVE;
  if (!request.parent.empty()) o.parent = request.parent.c_str();
  o.pause = LivePauseFn;
  o.resume = LiveResumeFn;
  o.pause_ctx = &live;
  auto r = ApiSave(request.path, o, compression, live_stats);
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
