// SPDX-License-Identifier: MIT
// Incremental snapshots: the parent a snapshot names (by id and path), the
// dirty pages a VMM accumulates between two snapshot points, and a
// MemorySource that stores only those pages (SnapshotWriter::AddPages).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "capture/capture.h"
#include "capture/dirty/page_set.h"
#include "capture/dirty/tracker.h"
#include "format/layout.h"
#include "base/status.h"
#include "kvm/dirty/dirty_log.h"

namespace vmsnap::capture::dirty {

// A snapshot an incremental one can name as its parent.
struct ParentInfo {
  layout::SnapshotId id{};
  std::string path;     // as the VMM knows it (absolute or relative to the cwd)
  uint32_t depth = 0;   // 0 for a full snapshot, its ParentRef.depth otherwise
};

// Reads the id and depth of the snapshot at `path` (for `save --parent` and
// for the snapshot a VM was loaded from).
Result<ParentInfo> ReadParentInfo(const std::string& path);

// Path of `parent` as the child at `child` records it: relative to the
// child's directory (SnapshotChain resolves it from there).
std::string ParentPathFor(const std::string& parent, const std::string& child);

// Stores the pages in `pages` (dense indices over `layout`) and names
// `parent`; every other page is left to the parent.
class IncrementalMemory final : public MemorySource {
 public:
  IncrementalMemory(const PageLayout& layout, const PageSet& pages, ParentInfo parent, std::string child_path)
      : layout_(layout), pages_(pages), parent_(std::move(parent)), child_path_(std::move(child_path)) {}
  // `regions` must be the layout's regions (or copies of them with other
  // host pointers, e.g. a live save's shadow), same order and sizes.
  Status Feed(std::span<const kvm::GuestRegion> regions, SnapshotWriter& writer) override;

 private:
  const PageLayout& layout_;
  const PageSet& pages_;
  ParentInfo parent_;
  std::string child_path_;
};

// The dirty tracking a VMM runs for its snapshots: one tracker, the pages
// dirtied since the last snapshot point, and that snapshot (the next
// incremental one's parent). Thread-safe where the tracker is.
class VmDirtyTracking {
 public:
  // Before any vCPU exists: picks the mode (requested, or the ring when the
  // host has it, else the bitmap) and, for the ring, enables it on the VM.
  // `vm_fd` is not owned and outlives this object.
  static Result<std::unique_ptr<VmDirtyTracking>> Prepare(int vm_fd, std::optional<Mode> requested,
                                                          uint32_t ring_bytes = 0);
  Mode mode() const { return mode_; }

  // After memory is registered: creates the tracker over `regions`.
  Status SetRegions(std::span<const kvm::GuestRegion> regions, uint32_t page_size = 4096);
  // After each vCPU is created (ring: maps its ring).
  Status AttachVcpu(int vcpu_fd, int vcpu_index);
  // Arms every page; the current memory is the base of the next snapshot.
  Status Start();

  DirtyTracker& tracker() { return *tracker_; }
  const PageLayout& layout() const { return tracker_->layout(); }

  // Harvests and re-arms: returns the pages dirtied since the last call and
  // adds them to the since-last-snapshot set. Pages are safe to read on
  // return; with vCPUs paused, the answer is complete.
  Result<PageSet> Collect();
  // At a snapshot point (vCPUs paused): Collect, then hand over and clear
  // the pages dirtied since the last snapshot point.
  Result<PageSet> TakeSinceLastSnapshot();

  // A snapshot that took the pages failed: they are dirty since the last
  // snapshot point again.
  void GiveBack(const PageSet& pages);

  const std::optional<ParentInfo>& last_snapshot() const { return last_; }
  void set_last_snapshot(ParentInfo p) { last_ = std::move(p); }

 private:
  VmDirtyTracking() = default;
  Mode mode_ = Mode::kOff;
  uint32_t ring_bytes_ = 0;
  std::unique_ptr<kvm::dirty::VmDirtyLog> ops_;
  std::unique_ptr<DirtyTracker> tracker_;
  std::vector<std::pair<int, int>> early_vcpus_;  // attached before SetRegions
  std::mutex mu_;
  PageSet since_last_;
  std::optional<ParentInfo> last_;
};

}  // namespace vmsnap::capture::dirty
