// SPDX-License-Identifier: MIT
// Dirty-page tracking behind one interface, over KVM's two mechanisms: the
// per-slot dirty bitmap and the per-vCPU dirty ring. See
// docs/checkpoint-cycles.md for how each operation maps onto both.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "capture/dirty/page_set.h"
#include "base/status.h"
#include "kvm/dirty/dirty_log.h"
#include "kvm/kvm.h"

namespace vmsnap::capture::dirty {

enum class Mode { kOff, kBitmap, kRing };
std::string_view ModeName(Mode m);
// "ring", "bitmap", "off".
Result<Mode> ParseMode(std::string_view s);

// What the host offers, from KVM_CHECK_EXTENSION on the VM fd.
struct HostSupport {
  bool ring = false;
  bool ring_acq_rel = false;
  uint32_t ring_max_bytes = 0;   // per vCPU
  uint64_t manual_protect = 0;   // KVM_DIRTY_LOG_* flags MANUAL_DIRTY_LOG_PROTECT2 accepts
};
Result<HostSupport> Probe(kvm::dirty::DirtyLogOps& ops);
// The ring when the host has it, else the bitmap.
Mode DefaultMode(const HostSupport& host);

// A page's life under a tracker: *armed* (KVM will report the next write),
// *dirty* (written since armed, not yet collected), *reported* (returned by
// Collect, not re-armed yet). Collect moves dirty pages to reported; Rearm
// moves reported pages back to armed. A write to a reported page is not
// reported again until the page is re-armed (on the bitmap the page is simply
// not write-protected; on the ring, which re-protects every harvested page
// when the rings are reset, the tracker drops those entries). All methods are
// thread-safe.
class DirtyTracker {
 public:
  virtual ~DirtyTracker() = default;
  virtual Mode mode() const = 0;
  const PageLayout& layout() const { return layout_; }

  // Arms every page: from now on each write is reported once. Switches
  // KVM_MEM_LOG_DIRTY_PAGES on for slots that lack it. Writes before Start
  // are forgotten.
  virtual Status Start() = 0;
  // Stops tracking; switches the slot flag off again where Start set it.
  virtual Status Stop() = 0;

  // Adds to `out` (sized layout().total_pages()) every page written since it
  // was last armed and not reported since, and marks them reported. On
  // return, KVM has re-protected every harvested page (the ring's entries are
  // reset), so the pages' contents may be read. A complete answer up to now
  // needs every vCPU outside KVM_RUN (a vCPU exit flushes the CPU's
  // page-modification log into the ring): pause or kick the vCPUs first.
  // Returns how many pages were added.
  Result<uint64_t> Collect(PageSet& out);
  // Re-arms reported pages (bitmap with manual protect: KVM_CLEAR_DIRTY_LOG).
  Status Rearm(const PageSet& pages);
  Status RearmAll();
  // Collect into `out`, then re-arm those pages: the incremental-snapshot step.
  Result<uint64_t> CollectAndRearm(PageSet& out);

  // Writes by the VMM itself (loader, device emulation): KVM does not see
  // them. They are reported by the next Collect, whatever the page's state.
  void MarkDirty(uint64_t gpa, uint64_t len);

  // Ring: the vCPU thread calls this on KVM_EXIT_DIRTY_RING_FULL, before it
  // re-enters KVM_RUN; it harvests every ring and resets them. Harvested
  // pages are kept for the next Collect. Bitmap: nothing to do.
  virtual Status HandleRingFull(int vcpu_index) { return Status::Ok(); }
  // Ring: maps a vCPU's ring; call for each vCPU after creating it.
  virtual Status AttachVcpu(int vcpu_fd, int vcpu_index) { return Status::Ok(); }
  uint64_t ring_full_exits() const { return ring_full_exits_.load(); }
  // Times KVM overfilled a ring (entries lost): the next Collect then
  // reports every page, so nothing is missed.
  uint64_t ring_overflows() const { return ring_overflows_.load(); }

 protected:
  explicit DirtyTracker(PageLayout layout);
  // Under mu_: adds the pages KVM reports into `found` (not masked).
  virtual Status HarvestLocked(PageSet& found) = 0;
  // Under mu_: re-arms these reported pages in KVM.
  virtual Status RearmLocked(const PageSet& pages) = 0;

  std::mutex mu_;
  PageLayout layout_;
  PageSet reported_;   // reported, not re-armed
  PageSet marked_;     // MarkDirty since the last Collect
  PageSet scratch_;
  std::atomic<uint64_t> ring_full_exits_{0};
  std::atomic<uint64_t> ring_overflows_{0};
};

// Switches KVM_MEM_LOG_DIRTY_PAGES on for the slots that lack it, and back
// off on Disable for exactly those. Both trackers need it: KVM records writes,
// in the bitmap or in the ring, only for slots that carry the flag.
class SlotDirtyLogging {
 public:
  Status Enable(kvm::dirty::DirtyLogOps& ops, const std::vector<kvm::GuestRegion>& regions);
  Status Disable(kvm::dirty::DirtyLogOps& ops, const std::vector<kvm::GuestRegion>& regions);

 private:
  std::vector<bool> added_;  // by region: Enable set the flag
};

struct TrackerOptions {
  uint32_t page_size = 4096;
  // Ring: bytes per vCPU (a power of two); 0 = 256 KiB (16384 entries).
  uint32_t ring_bytes = 0;
};

// Bitmap tracker over `ops` (not owned; outlives the tracker). Enables
// MANUAL_DIRTY_LOG_PROTECT2 when the host has it.
Result<std::unique_ptr<DirtyTracker>> CreateBitmapTracker(kvm::dirty::DirtyLogOps& ops,
                                                          std::span<const kvm::GuestRegion> regions,
                                                          const TrackerOptions& options);

// Ring: the VM-level half, which must happen before any vCPU is created.
// Enables KVM_CAP_DIRTY_LOG_RING_ACQ_REL (or KVM_CAP_DIRTY_LOG_RING) with
// `bytes` per vCPU (0 = the default). Returns the size used.
Result<uint32_t> EnableRing(kvm::dirty::DirtyLogOps& ops, uint32_t bytes);
// Ring tracker; EnableRing must have succeeded with options.ring_bytes.
// AttachVcpu each vCPU before Start.
Result<std::unique_ptr<DirtyTracker>> CreateRingTracker(kvm::dirty::DirtyLogOps& ops,
                                                        std::span<const kvm::GuestRegion> regions,
                                                        const TrackerOptions& options);

}  // namespace vmsnap::capture::dirty
