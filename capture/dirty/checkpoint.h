// SPDX-License-Identifier: MIT
// Checkpoint cycles over a DirtyTracker: the semantics of the never-merged KVM
// memory-tracking proposal (KVM_INIT_MT, KVM_ENABLE_MT, KVM_PREPARE_MT_CP,
// KVM_MT_SUBLIST_FETCH, KVM_REARM_DIRTY_PAGES, KVM_MT_VM_QUIESCED,
// KVM_MT_DIRTY_TRIGGER) provided in user space. docs/checkpoint-cycles.md
// describes each operation and how it maps onto the bitmap and the ring.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "capture/dirty/page_set.h"
#include "capture/dirty/tracker.h"
#include "base/status.h"

namespace vmsnap::capture::dirty {

struct CheckpointOptions {
  // The most dirty pages a cycle is meant to hold (KVM_INIT_MT's list size).
  // Reaching it fires the dirty trigger even if none was set, so the VMM
  // checkpoints before the cycle grows further. Pages past it are kept, not
  // dropped. Must be > 0.
  uint64_t max_dirty_per_cycle = 0;
  // A page is handed out at most once per cycle; a write to it after it was
  // fetched (with re-arm) is carried into the next cycle instead.
  bool no_duplicates = false;
  // How often waiting fetchers and the trigger poller harvest the tracker.
  std::chrono::microseconds poll_interval{1000};
};

struct FetchOptions {
  size_t max_pages = 64;  // N: the sub-list holds at most this many pages
  // Block until N pages are available, or the VM is quiesced, or tracking
  // is disabled.
  bool wait = false;
  // Re-arm tracking for each fetched page, so a later write in this cycle is
  // reported again (or, with no_duplicates, in the next cycle).
  bool rearm = false;
};

struct Sublist {
  uint64_t cycle_id = 0;
  std::vector<uint64_t> gpas;  // guest-physical address of each page, ascending discovery order
  // The VM was quiesced when this list was taken: an empty list then means
  // the cycle has no more dirty pages.
  bool quiesced = false;
};

class CheckpointTracker {
 public:
  // KVM_INIT_MT. `tracker` is not owned and outlives this object.
  static Result<std::unique_ptr<CheckpointTracker>> Init(DirtyTracker& tracker, const CheckpointOptions& options);
  ~CheckpointTracker();
  CheckpointTracker(const CheckpointTracker&) = delete;
  CheckpointTracker& operator=(const CheckpointTracker&) = delete;

  // KVM_ENABLE_MT on/off. Enable arms every page (earlier writes forgotten);
  // Disable stops tracking and wakes every waiting fetcher with an error.
  Status Enable();
  Status Disable();

  // KVM_PREPARE_MT_CP: starts cycle `cycle_id`. Pages dirty but not fetched
  // in the previous cycle, and pages deferred by no_duplicates, belong to the
  // new one. Clears the quiesced mark and re-arms the trigger.
  Status PrepareCycle(uint64_t cycle_id);

  // KVM_MT_SUBLIST_FETCH: thread-safe; each page goes to one caller.
  Result<Sublist> Fetch(const FetchOptions& options);

  // KVM_REARM_DIRTY_PAGES: re-arms every page fetched without re-arm.
  Status RearmAll();

  // KVM_MT_VM_QUIESCED: the VMM has paused every vCPU (out of KVM_RUN).
  // Takes a final harvest, so the cycle holds every write made before the
  // pause, then wakes every waiting fetcher.
  Status MarkQuiesced();

  // KVM_MT_DIRTY_TRIGGER: when the cycle's dirty count reaches `count`,
  // `force_exit` runs once (per cycle) on the poller thread; the VMM wires it
  // to its vCPU kick. count 0 disables the trigger (max_dirty_per_cycle
  // still applies).
  void SetDirtyTrigger(uint64_t count, std::function<void()> force_exit);

  // Harvests the tracker now and checks the trigger (the poller calls it;
  // the VMM may too, e.g. after a ring-full exit).
  Status Poll();

  uint64_t cycle_id() const;
  // Distinct pages found dirty in this cycle so far.
  uint64_t dirty_count() const;
  DirtyTracker& tracker() { return tracker_; }

 private:
  CheckpointTracker(DirtyTracker& tracker, const CheckpointOptions& options);
  // Under mu_: harvests the tracker and queues new pages. Returns the
  // callback to run (outside the lock) if the trigger fired.
  Result<std::function<void()>> HarvestLocked();
  void Absorb(const PageSet& got);
  void PollerLoop();

  DirtyTracker& tracker_;
  CheckpointOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool enabled_ = false;
  bool quiesced_ = false;
  uint64_t cycle_id_ = 0;
  uint64_t dirty_count_ = 0;
  std::deque<uint64_t> pending_;  // dense page indices, discovery order
  PageSet in_pending_;
  PageSet counted_;   // found dirty this cycle
  PageSet fetched_;   // handed out this cycle
  PageSet deferred_;  // no_duplicates: dirty again after fetch, for the next cycle
  PageSet harvest_;
  uint64_t trigger_ = 0;
  bool triggered_ = false;
  std::function<void()> force_exit_;
  std::thread poller_;
  bool stop_poller_ = false;
};

}  // namespace vmsnap::capture::dirty
