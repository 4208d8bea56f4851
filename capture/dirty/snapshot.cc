// SPDX-License-Identifier: MIT
// Snapshots with dirty tracking: see snapshot.h.
#include "capture/dirty/snapshot.h"

#include <optional>

namespace vmsnap::capture::dirty {
namespace {

Result<std::optional<ParentInfo>> ResolveParent(VmDirtyTracking* dirty, const SnapshotPlan& plan) {
  switch (plan.parent) {
    case ParentMode::kFull:
      return std::optional<ParentInfo>();
    case ParentMode::kAuto:
      if (dirty && dirty->last_snapshot()) return std::optional<ParentInfo>(*dirty->last_snapshot());
      return std::optional<ParentInfo>();
    case ParentMode::kExplicit: {
      if (!dirty) {
        return Status::InvalidArgument("an incremental snapshot needs dirty tracking, and this VM runs with "
                                       "--dirty-tracking off");
      }
      VMSNAP_ASSIGN_OR_RETURN(ParentInfo p, ReadParentInfo(plan.parent_path));
      const auto& last = dirty->last_snapshot();
      if (!last || last->id != p.id) {
        return Status::InvalidArgument(
            "parent " + plan.parent_path + " (id " + layout::IdToHex(p.id) + ") is not this VM's last snapshot" +
            (last ? " (" + last->path + ", id " + layout::IdToHex(last->id) + ")" : std::string(" (it has none)")) +
            ": only the pages dirtied since the last snapshot are known");
      }
      return std::optional<ParentInfo>(p);
    }
  }
  return std::optional<ParentInfo>();
}

void Remember(VmDirtyTracking* dirty, const CaptureResult& r, const std::optional<ParentInfo>& parent) {
  if (!dirty) return;
  ParentInfo me;
  me.id = r.id;
  me.path = r.path;
  me.depth = parent ? parent->depth + 1 : 0;
  dirty->set_last_snapshot(me);
}

}  // namespace

Result<CaptureResult> SavePaused(VmDirtyTracking* dirty, ArchCapturer& arch,
                                 std::span<const kvm::GuestRegion> regions, const std::string& path,
                                 const SnapshotPlan& plan, CaptureOptions options) {
  VMSNAP_ASSIGN_OR_RETURN(std::optional<ParentInfo> parent, ResolveParent(dirty, plan));
  // Writing over the parent would leave the new snapshot without it.
  if (parent) options.writer.inputs.push_back(parent->path);
  PageSet pages;
  if (dirty) {
    VMSNAP_ASSIGN_OR_RETURN(pages, dirty->TakeSinceLastSnapshot());
  }
  std::optional<IncrementalMemory> source;
  if (parent) {
    source.emplace(dirty->layout(), pages, *parent, path);
    options.memory = &*source;
  }
  auto r = WriteSnapshot(path, arch, regions, options);
  if (!r.ok()) {
    if (dirty) dirty->GiveBack(pages);
    return r.status();
  }
  Remember(dirty, *r, parent);
  return r;
}

Result<CaptureResult> SaveLive(VmDirtyTracking* dirty, ArchCapturer& arch, const std::string& path,
                               const SnapshotPlan& plan, CaptureOptions options, const LivePause& vm,
                               const LiveOptions& live, LiveStats* stats) {
  if (!dirty) {
    return Status::InvalidArgument("save --live needs dirty tracking, and this VM runs with --dirty-tracking off");
  }
  VMSNAP_ASSIGN_OR_RETURN(std::optional<ParentInfo> parent, ResolveParent(dirty, plan));
  // Writing over the parent would leave the new snapshot without it.
  if (parent) options.writer.inputs.push_back(parent->path);
  VMSNAP_ASSIGN_OR_RETURN(auto shadow, ShadowMemory::Create(dirty->layout()));
  PageSet pages;
  bool took = false;
  std::unique_ptr<FrozenArchState> frozen;
  LiveHooks hooks;
  hooks.collect = [&] { return dirty->Collect(); };
  hooks.pause = vm.pause;
  hooks.resume = vm.resume;
  hooks.while_paused = [&]() -> Status {
    VMSNAP_ASSIGN_OR_RETURN(pages, dirty->TakeSinceLastSnapshot());
    took = true;
    VMSNAP_ASSIGN_OR_RETURN(frozen, FrozenArchState::Freeze(arch));
    return Status::Ok();
  };
  auto st = RunLiveCopy(*shadow, hooks, live);
  if (!st.ok()) {
    if (took) dirty->GiveBack(pages);
    return st.status();
  }
  if (stats) *stats = *st;
  options.live = true;
  options.rounds = st->rounds;
  options.pause_ns = st->pause_ns;
  std::optional<IncrementalMemory> source;
  if (parent) {
    source.emplace(dirty->layout(), pages, *parent, path);
    options.memory = &*source;
  }
  auto r = WriteSnapshot(path, *frozen, shadow->regions(), options);
  if (!r.ok()) {
    dirty->GiveBack(pages);
    return r.status();
  }
  Remember(dirty, *r, parent);
  return r;
}

}  // namespace vmsnap::capture::dirty
