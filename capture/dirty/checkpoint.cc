// SPDX-License-Identifier: MIT
// Checkpoint cycles over a DirtyTracker: see checkpoint.h.
#include "capture/dirty/checkpoint.h"

#include <algorithm>

namespace vmsnap::capture::dirty {

Result<std::unique_ptr<CheckpointTracker>> CheckpointTracker::Init(DirtyTracker& tracker,
                                                                   const CheckpointOptions& options) {
  if (options.max_dirty_per_cycle == 0) {
    return Status::InvalidArgument("checkpoint tracking: max_dirty_per_cycle must be > 0");
  }
  if (options.poll_interval.count() <= 0) {
    return Status::InvalidArgument("checkpoint tracking: poll_interval must be > 0");
  }
  return std::unique_ptr<CheckpointTracker>(new CheckpointTracker(tracker, options));
}

CheckpointTracker::CheckpointTracker(DirtyTracker& tracker, const CheckpointOptions& options)
    : tracker_(tracker),
      options_(options),
      in_pending_(tracker.layout().total_pages()),
      counted_(tracker.layout().total_pages()),
      fetched_(tracker.layout().total_pages()),
      deferred_(tracker.layout().total_pages()),
      harvest_(tracker.layout().total_pages()) {}

CheckpointTracker::~CheckpointTracker() {
  {
    std::lock_guard lock(mu_);
    stop_poller_ = true;
    enabled_ = false;
  }
  cv_.notify_all();
  if (poller_.joinable()) poller_.join();
}

Status CheckpointTracker::Enable() {
  std::lock_guard lock(mu_);
  if (enabled_) return Status::Ok();
  VMSNAP_RETURN_IF_ERROR(tracker_.Start());
  enabled_ = true;
  quiesced_ = false;
  pending_.clear();
  in_pending_.Reset();
  counted_.Reset();
  fetched_.Reset();
  deferred_.Reset();
  dirty_count_ = 0;
  triggered_ = false;
  stop_poller_ = false;
  if (!poller_.joinable()) poller_ = std::thread([this] { PollerLoop(); });
  return Status::Ok();
}

Status CheckpointTracker::Disable() {
  {
    std::lock_guard lock(mu_);
    if (!enabled_) return Status::Ok();
    enabled_ = false;
    stop_poller_ = true;
  }
  cv_.notify_all();
  if (poller_.joinable()) poller_.join();
  return tracker_.Stop();
}

Status CheckpointTracker::PrepareCycle(uint64_t cycle_id) {
  std::lock_guard lock(mu_);
  if (!enabled_) return Status::InvalidArgument("checkpoint tracking is not enabled");
  cycle_id_ = cycle_id;
  quiesced_ = false;
  triggered_ = false;
  fetched_.Reset();
  counted_.Reset();
  dirty_count_ = 0;
  // Carried over: unfetched pages, then deferred ones.
  for (uint64_t i : pending_) counted_.Set(i);
  dirty_count_ = pending_.size();
  deferred_.ForEach([&](uint64_t i) {
    if (!in_pending_.Test(i)) {
      pending_.push_back(i);
      in_pending_.Set(i);
      counted_.Set(i);
      ++dirty_count_;
    }
  });
  deferred_.Reset();
  return Status::Ok();
}

void CheckpointTracker::Absorb(const PageSet& got) {
  got.ForEach([&](uint64_t i) {
    if (in_pending_.Test(i)) return;
    if (options_.no_duplicates && fetched_.Test(i)) {
      deferred_.Set(i);
      return;
    }
    pending_.push_back(i);
    in_pending_.Set(i);
    if (!counted_.Test(i)) {
      counted_.Set(i);
      ++dirty_count_;
    }
  });
}

Result<std::function<void()>> CheckpointTracker::HarvestLocked() {
  harvest_.Reset();
  VMSNAP_RETURN_IF_ERROR(tracker_.Collect(harvest_).status());
  Absorb(harvest_);
  uint64_t limit = trigger_ ? std::min(trigger_, options_.max_dirty_per_cycle) : options_.max_dirty_per_cycle;
  if (!triggered_ && !quiesced_ && dirty_count_ >= limit && force_exit_) {
    triggered_ = true;
    return force_exit_;
  }
  return std::function<void()>();
}

Status CheckpointTracker::Poll() {
  std::function<void()> fire;
  {
    std::lock_guard lock(mu_);
    if (!enabled_) return Status::Ok();
    VMSNAP_ASSIGN_OR_RETURN(fire, HarvestLocked());
  }
  cv_.notify_all();
  if (fire) fire();
  return Status::Ok();
}

void CheckpointTracker::PollerLoop() {
  std::unique_lock lock(mu_);
  while (!stop_poller_) {
    cv_.wait_for(lock, options_.poll_interval);
    if (stop_poller_) break;
    // Only the trigger needs a harvest without a fetcher asking.
    if (!enabled_ || !force_exit_ || triggered_ || quiesced_) continue;
    auto fire = HarvestLocked();
    if (!fire.ok() || !*fire) continue;
    lock.unlock();
    cv_.notify_all();
    (*fire)();
    lock.lock();
  }
}

Result<Sublist> CheckpointTracker::Fetch(const FetchOptions& options) {
  if (options.max_pages == 0) return Status::InvalidArgument("fetch of a sub-list of 0 pages");
  std::vector<uint64_t> taken;
  Sublist out;
  std::function<void()> fire;
  {
    std::unique_lock lock(mu_);
    for (;;) {
      if (!enabled_) return Status::InvalidArgument("checkpoint tracking is not enabled");
      if (!quiesced_) {
        auto f = HarvestLocked();
        if (!f.ok()) return f.status();
        if (*f) fire = *f;
      }
      if (!options.wait || quiesced_ || pending_.size() >= options.max_pages) break;
      if (fire) {
        // Run the trigger outside the lock before sleeping.
        lock.unlock();
        fire();
        fire = nullptr;
        lock.lock();
        continue;
      }
      cv_.wait_for(lock, options_.poll_interval);
    }
    size_t n = std::min(options.max_pages, pending_.size());
    taken.assign(pending_.begin(), pending_.begin() + static_cast<long>(n));
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<long>(n));
    for (uint64_t i : taken) {
      in_pending_.Clear(i);
      fetched_.Set(i);
    }
    out.cycle_id = cycle_id_;
    out.quiesced = quiesced_;
  }
  if (fire) fire();
  if (options.rearm && !taken.empty()) {
    PageSet set(tracker_.layout().total_pages());
    for (uint64_t i : taken) set.Set(i);
    VMSNAP_RETURN_IF_ERROR(tracker_.Rearm(set));
  }
  out.gpas.reserve(taken.size());
  for (uint64_t i : taken) out.gpas.push_back(tracker_.layout().GpaOfIndex(i));
  return out;
}

Status CheckpointTracker::RearmAll() { return tracker_.RearmAll(); }

Status CheckpointTracker::MarkQuiesced() {
  {
    std::lock_guard lock(mu_);
    if (!enabled_) return Status::InvalidArgument("checkpoint tracking is not enabled");
    VMSNAP_RETURN_IF_ERROR(HarvestLocked().status());
    quiesced_ = true;
  }
  cv_.notify_all();
  return Status::Ok();
}

void CheckpointTracker::SetDirtyTrigger(uint64_t count, std::function<void()> force_exit) {
  std::lock_guard lock(mu_);
  trigger_ = count;
  force_exit_ = std::move(force_exit);
  triggered_ = false;
}

uint64_t CheckpointTracker::cycle_id() const {
  std::lock_guard lock(mu_);
  return cycle_id_;
}

uint64_t CheckpointTracker::dirty_count() const {
  std::lock_guard lock(mu_);
  return dirty_count_;
}

}  // namespace vmsnap::capture::dirty
