// SPDX-License-Identifier: MIT
// Snapshots a VMM takes with dirty tracking: full or incremental (against the
// VM's last snapshot, named automatically or with `save --parent`), stopped
// or live. The VMM supplies its pause and its ArchCapturer; everything about
// which pages go in and which parent is named lives here.
#pragma once

#include <functional>
#include <span>
#include <string>

#include "capture/capture.h"
#include "capture/dirty/incremental.h"
#include "capture/dirty/live.h"
#include "base/status.h"

namespace vmsnap::capture::dirty {

enum class ParentMode {
  kFull,      // a full snapshot
  kAuto,      // incremental on the VM's last snapshot, full if there is none
  kExplicit,  // incremental on `parent_path`, which must be the VM's last snapshot
};

struct SnapshotPlan {
  ParentMode parent = ParentMode::kFull;
  std::string parent_path;
};

// With every vCPU paused. `dirty` may be null (tracking off): only full
// snapshots then. On success the new file becomes the VM's last snapshot.
Result<CaptureResult> SavePaused(VmDirtyTracking* dirty, ArchCapturer& arch,
                                 std::span<const kvm::GuestRegion> regions, const std::string& path,
                                 const SnapshotPlan& plan, CaptureOptions options);

struct LivePause {
  std::function<void()> pause;   // returns with every vCPU out of KVM_RUN
  std::function<void()> resume;
};

// With the vCPUs running: copy rounds, a short pause, then the file is
// written while the guest runs on. Needs dirty tracking.
Result<CaptureResult> SaveLive(VmDirtyTracking* dirty, ArchCapturer& arch, const std::string& path,
                               const SnapshotPlan& plan, CaptureOptions options, const LivePause& vm,
                               const LiveOptions& live, LiveStats* stats);

}  // namespace vmsnap::capture::dirty
