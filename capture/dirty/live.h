// SPDX-License-Identifier: MIT
// Live snapshots: guest memory is copied into a shadow while the guest keeps
// running, in rounds driven by a dirty tracker, then the VM is paused for a
// final round (the pages dirtied since the last round, and the vCPU and VM
// state). The file is written from the shadow after the guest has resumed,
// so the pause does not include compression or I/O.
#pragma once

#include <capnp/message.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "capture/capture.h"
#include "capture/dirty/page_set.h"
#include "base/mapping.h"
#include "base/status.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::capture::dirty {

struct LiveOptions {
  uint32_t max_rounds = 8;        // copy rounds while running, the first (full) one included
  uint64_t converged_pages = 16;  // stop early when a round finds at most this many pages
};

struct LiveStats {
  uint32_t rounds = 0;           // every copy round, the final paused one included
  uint64_t pause_ns = 0;
  std::vector<uint64_t> round_pages;  // pages copied in each round
};

// A private copy of guest memory with the same layout.
class ShadowMemory {
 public:
  static Result<std::unique_ptr<ShadowMemory>> Create(const PageLayout& layout);
  ShadowMemory(const ShadowMemory&) = delete;
  ShadowMemory& operator=(const ShadowMemory&) = delete;

  void CopyAll();
  void CopyPages(const PageSet& pages);
  // The layout's regions with host pointers into the shadow.
  const std::vector<kvm::GuestRegion>& regions() const { return regions_; }
  uint64_t total_pages() const { return layout_.total_pages(); }

 private:
  explicit ShadowMemory(const PageLayout& layout) : layout_(layout) {}
  const PageLayout& layout_;
  std::vector<kvm::GuestRegion> regions_;
  std::vector<Mapping> maps_;
};

// Captures the architecture state into a message of its own while the VM is
// paused, and replays it into the snapshot's manifest later.
class FrozenArchState final : public ArchCapturer {
 public:
  static Result<std::unique_ptr<FrozenArchState>> Freeze(ArchCapturer& arch);
  schema::Arch arch() const override { return arch_; }
  uint32_t page_size() const override { return page_size_; }
  Status Capture(schema::Manifest::Builder manifest) override;

 private:
  FrozenArchState() = default;
  // Held by pointer: its destructor may throw, which an override of
  // ~ArchCapturer may not.
  std::unique_ptr<capnp::MallocMessageBuilder> message_;
  schema::Arch arch_ = schema::Arch::X8664;
  uint32_t page_size_ = 4096;
};

// The live-save procedure, with the VMM's pause as callbacks.
struct LiveHooks {
  // Returns the pages dirtied (and re-armed) since the previous call.
  std::function<Result<PageSet>()> collect;
  std::function<void()> pause;   // returns once every vCPU is out of KVM_RUN
  std::function<void()> resume;
  // While paused, after the last copy: capture what must be consistent with
  // memory (vCPU and VM state).
  std::function<Status()> while_paused;
};

// Runs the rounds into `shadow`: a full copy, then dirty pages until a round
// does not shrink, converges or max_rounds is reached, then the paused final
// round. Returns with the VM resumed (also on error, if it paused it).
Result<LiveStats> RunLiveCopy(ShadowMemory& shadow, const LiveHooks& hooks, const LiveOptions& options);

}  // namespace vmsnap::capture::dirty
