// SPDX-License-Identifier: MIT
// The built-in x86-64 VMM behind `vmsnap run` and `vmsnap load`: one VM, its
// guest RAM regions, one thread per vCPU, the serial/exit/doorbell ports, a
// consistent pause/resume of all vCPUs, snapshots, and the control socket.
// One class, its members defined by job: vmm.cc (life cycle), vcpu_loop.cc,
// devices.cc, vmm_control.cc, save.cc.
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/progress.h"
#include "capture/capture.h"
#include "capture/dirty/snapshot.h"
#include "capture/x86_64/x86_capture.h"
#include "format/compression_spec.h"
#include "format/load_history.h"
#include "base/fd.h"
#include "base/status.h"
#include "kvm/kvm.h"
#include "kvm/x86_64/x86.h"
#include "include/vmsnap/vmsnap.h"
#include "restore/memory/loader.h"
#include "restore/restore.h"
#include "vmm/devices.h"
#include "vmm/memory.h"
#include "vmm/ports.h"

namespace vmsnap::vmm {

// Devices and options shared by `run` and `load`.
struct VmmOptions {
  std::string serial = "-";            // "-": stdout; else a file, truncated
  std::string control_socket;          // empty: no control socket
  std::string doorbell_snapshot;       // empty: the doorbell only pauses; "{n}" numbered from 1
  std::string kvm_device;              // empty: kvm::DevicePath()
  std::string tool_version = "unknown";
  // Dirty tracking (docs/checkpoint-cycles.md): kOff, or nullopt for the
  // ring when the host has it, else the bitmap.
  std::optional<capture::dirty::Mode> dirty_tracking;
  // Doorbell snapshots after the process's first (after `load`: all of them)
  // are incremental on the previous one.
  bool incremental = false;
  // Codec of doorbell snapshots, and of control-socket saves that name none.
  CompressionSpec compression = DefaultSaveCompression();  // "auto"
  // A fresh progress callback for each doorbell snapshot (e.g. a progress
  // bar on a terminal); empty: none.
  std::function<ProgressFn()> doorbell_progress;
  // Told of a doorbell snapshot that failed (the VM goes on); empty: ignored.
  std::function<void(const Status&)> report;
  // A socket whose peer owns this VM (`vmsnap load --via`): when the peer
  // hangs up, the VM ends at once. -1: none.
  int hangup_fd = -1;
};

// What a warm VM (`vmsnap serve`) is made with before any snapshot is known:
// a snapshot restores into it only if it has the same memory layout, vCPU
// count and VM configuration (WarmMismatch).
struct WarmShape {
  uint64_t mem_size = 64ull << 20;
  int vcpus = 1;
};

// How a restore fills guest memory: what the VMM asks of the C API's
// vmsnap_vm_load_memory (vmsnap_load_options in include/vmsnap/vmsnap.h).
struct LoadPlan {
  bool lazy = false;  // false: every page copied before the guest runs
  unsigned threads = 0;  // 0: one per core
  // Eager: (bytes done, total), from the restoring thread.
  ProgressFn progress;
  // Lazy: the pager's first error, from a pager thread (see
  // vmsnap_pager_error_fn: the VM must stop).
  std::function<void(const std::string& message)> on_error;
  // Lazy: map a raw single-layer snapshot from its file (VMSNAP_LOAD_MAP_FILE),
  // remembering verified files in `verified_dir`; map a fresh decompressed
  // image from `image_dir`, building one first with `build_image`.
  bool map_file = false;
  std::string verified_dir;
  std::string image_dir;
  bool build_image = false;
  // Lazy, paged in: fill nothing in the background until the guest starts
  // (a warm VM bound ahead, RestoreWarm then lets it begin).
  bool hold_fill = false;
  // Lazy: makes a chunk readable in a file filled on demand (a store's cache).
  memory::ChunkFetchFn fetch;
};

// A `save` over the control socket.
struct SaveRequest {
  std::string path;
  std::string parent;  // non-empty: incremental on this snapshot (the VM's last)
  bool live = false;   // copy memory while the guest runs
  std::optional<CompressionSpec> compression;  // nullopt: VmmOptions::compression
  // End the VM (exit status 0) once the snapshot is written, without letting
  // the vCPUs run again: nothing the guest does after the snapshot point
  // (serial output, device I/O) happens twice when the snapshot is loaded.
  // A failed save resumes the VM instead.
  bool stop = false;
};

struct BootConfig {
  std::string image;
  uint64_t mem_size = 64ull << 20;
  std::string mem_file;                // non-empty: RAM backed by this file, MAP_SHARED
  int vcpus = 1;
};

// Called with every region right after a pause completes and before the
// snapshot is captured; a dirty tracker plugs in here (and in
// CaptureOptions::memory) to harvest what changed.
using PauseHook = std::function<Status(GuestMemory&)>;

class Vmm {
 public:
  static Result<std::unique_ptr<Vmm>> Boot(const BootConfig& boot, const VmmOptions& options);
  // Restores SNAPSHOT into a new VM, through the C API (vmsnap_vm_*), its
  // memory filled as `load` says.
  static Result<std::unique_ptr<Vmm>> Restore(const std::string& snapshot, const VmmOptions& options,
                                              LoadPlan load = {});
  // A warm VM: KVM VM, memory slots, irqchip, PIT and vCPUs, as Boot makes
  // them for `shape`, with untouched memory, waiting for RestoreWarm.
  static Result<std::unique_ptr<Vmm>> Prepare(const WarmShape& shape, const VmmOptions& options);
  // Why `chain` cannot be restored into this prepared VM, or "" when it can.
  std::string WarmMismatch(const SnapshotChain& chain) const;
  // Restores `chain` into this prepared VM (WarmMismatch must be ""): Bind
  // unless bound to this very chain (another binding is undone first), then
  // the state that depends on when the guest starts.
  Status RestoreWarm(std::shared_ptr<const SnapshotChain> chain, LoadPlan load);
  // The part of RestoreWarm done ahead of a request: the checks, memory
  // loaded (an image mapped), and every vCPU's state that means the same
  // whenever the guest starts (vmsnap_vm_restore_untimed_state). A failure
  // is undone (Unbind) before it returns.
  Status Bind(std::shared_ptr<const SnapshotChain> chain, LoadPlan load);
  // Undoes a Bind: the pager stopped, untouched memory again
  // (vmsnap_vm_restore_cancel). The VM is then as Prepare left it, but for
  // an armed pager (the next load starts its own when it pages).
  Status Unbind();
  // Arms the pager of a prepared VM that has none (after Unbind), as
  // Prepare does, so that the next load that pages finds it set up; nothing
  // when it is armed already, restored, or userfaultfd is missing.
  void ArmPager();
  // The chain Bind restored ahead, or null.
  const SnapshotChain* bound() const { return bound_.get(); }
  // Stops a lazy load's pager (pages never filled become inaccessible);
  // before the VM's memory goes. Nothing for an eager or mapped load.
  void StopPager();
  ~Vmm();
  Vmm(const Vmm&) = delete;
  Vmm& operator=(const Vmm&) = delete;

  // Runs the VM until the guest writes the exit port (returns its value &
  // 0xff), a `save --stop` ends it (returns 0), or something fails.
  Result<int> Run();

  // Writes a snapshot to `path`. While Run() is active this pauses every vCPU
  // consistently and resumes them afterwards; otherwise it captures directly.
  Result<capture::CaptureResult> Save(const std::string& path);
  // Save with a parent and/or live; `live_stats` (may be null) gets the rounds.
  Result<capture::CaptureResult> Save(const SaveRequest& request, capture::dirty::LiveStats* live_stats);

  // The pause primitive. RequestPause() kicks every vCPU out of KVM_RUN
  // (signal + immediate_exit); WaitPaused() returns once each has completed
  // any pending port I/O and parked; Resume() lets them go. Pauses nest.
  void RequestPause();
  void WaitPaused();
  void Resume();

  void set_pause_hook(PauseHook hook) { pause_hook_ = std::move(hook); }
  GuestMemory& memory() { return *memory_; }
  size_t vcpu_count() const { return vcpus_.size(); }
  kvm::x86::VcpuOps& vcpu_ops(size_t i) { return *vcpu_ops_[i]; }
  kvm::x86::VmOps& vm_ops() { return *vm_ops_; }
  kvm::Vm& vm() { return *vm_; }
  // See VmmOptions::hangup_fd; for a VM prepared before its client was known.
  void set_hangup_fd(int fd) { options_.hangup_fd = fd; }
  // Where doorbell snapshots go (a warm VM learns it with its snapshot).
  void set_doorbell_snapshot(std::string path) { options_.doorbell_snapshot = std::move(path); }
  // Called on the vCPU thread that wrote the exit port, with the status and
  // the serial output already flushed, before anything of the VM is stopped:
  // a warm VM's process answers its client from here and ends at once,
  // without waiting for the other vCPUs or the main loop to notice.
  void set_on_guest_exit(std::function<void(int status)> fn) { on_guest_exit_ = std::move(fn); }
  // CLOCK_MONOTONIC (ns) when vCPU 0 first entered KVM_RUN, and when its
  // first exit came back to the VMM (for a guest whose first instruction
  // exits, a port write say, the moment that instruction ran); 0 before.
  int64_t first_entry_ns() const { return first_entry_ns_.load(); }
  int64_t first_exit_ns() const { return first_exit_ns_.load(); }
  // The generation ID Run() gave the guest before its first instruction
  // (docs/guest-abi.md, "Generation ID").
  const std::array<uint8_t, 16>& generation_id() const { return generation_id_; }

 private:
  Vmm() = default;
  Status Init(const VmmOptions& options);
  // Slots, VM configuration, then what needs both (a boot's order; a
  // restore takes the same steps through RestoreSnapshot).
  Status CreateVm(const vmsnap_x86_vm_config& config);
  Status RegisterMemory();
  // The restore order through the C API, into a new VM (Init done) or a
  // prepared one (`warm_`); `snap_` is the snapshot.
  // `untimed_only`: stop before the state that depends on when the guest
  // starts (Bind); RestoreWarm sets it.
  Status RestoreSnapshot(LoadPlan load, bool untimed_only = false);
  Status CreateVcpus(int count);
  // The lineage snapshots of this VM record (docs/format.md, "Load
  // history"): `from`'s, if it was loaded from a snapshot; Run() then adds
  // this start.
  Status InheritLineage(const SnapshotChain* from, bool warm);
  // A fresh random generation ID, written to guest memory (boot.h) before
  // the first instruction, and this start's entry in the lineage.
  Status StartGeneration();
  // vcpu_loop.cc
  void StartVcpus();
  void JoinVcpus();
  void VcpuLoop(size_t i);
  // Returns false when the loop should end.
  bool HandleExit(size_t i);
  Status ParkVcpu(size_t i);
  void Stop(std::optional<int> exit_status, Status error);
  void Notify();
  // save.cc
  Status HandleDoorbell();
  // vmm_control.cc
  void HandleControlRequest(int fd, const std::string& line);
  // One save through the C API's vmsnap_vm_save: `o`'s flags, parent and
  // live callbacks set by the caller, the rest (codec, creator, progress,
  // lineage) here.
  Result<capture::CaptureResult> ApiSave(const std::string& path, vmsnap_save_options o,
                                         const CompressionSpec& compression, capture::dirty::LiveStats* stats);
  Result<capture::CaptureResult> CaptureNow(const std::string& path, uint64_t pause_ns,
                                            const capture::dirty::SnapshotPlan& plan,
                                            const CompressionSpec& compression);
  // Pauses the running VM (if it runs), captures, then resumes (or, with `stop_after` and a good
  // snapshot, ends the VM without letting it run again).
  Result<capture::CaptureResult> SavePausedNow(const std::string& path, const capture::dirty::SnapshotPlan& plan,
                                               const CompressionSpec& compression, bool stop_after = false);

  VmmOptions options_;
  // Progress of the snapshot being written, if someone watches it: set by
  // the Run thread around one save (control request or doorbell).
  ProgressFn save_progress_;  // (bytes of guest memory done, total), on the writer's I/O thread
  std::unique_ptr<kvm::System> system_;
  std::unique_ptr<kvm::Vm> vm_;
  std::unique_ptr<kvm::x86::RealVmOps> vm_ops_;
  // The C API's view of this VM (borrowing vm_'s and the vCPUs' fds): the
  // restore goes through it. Freed before them (~Vmm).
  vmsnap_vm* api_ = nullptr;
  vmsnap_snapshot* snap_ = nullptr;  // the snapshot restored, kept while the VM may page from it
  vmsnap_pager* pager_ = nullptr;    // a lazy load's
  std::unique_ptr<LoadPlan> load_;   // the callbacks the pager calls (a stable address)
  bool warm_ = false;                // made by Prepare
  std::shared_ptr<const SnapshotChain> bound_;  // Bind's, until RestoreWarm or Unbind
  std::unique_ptr<GuestMemory> memory_;
  std::vector<std::unique_ptr<kvm::Vcpu>> vcpus_;
  std::vector<std::unique_ptr<kvm::x86::RealVcpuOps>> vcpu_ops_;
  PauseHook pause_hook_;
  bool dirty_ = false;  // dirty tracking on (the C API's, through api_)

  SerialOut serial_;
  PortBus ports_;

  // Run state, guarded by mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
  int pause_depth_ = 0;
  size_t parked_ = 0;
  bool stop_ = false;
  std::optional<int> exit_status_;
  Status error_;
  int pending_doorbells_ = 0;
  int doorbell_seq_ = 0;
  UniqueFd event_fd_;  // wakes the main thread: doorbells, stops
  std::atomic<int64_t> first_entry_ns_{0};
  std::atomic<int64_t> first_exit_ns_{0};
  std::array<uint8_t, 16> generation_id_{};
  std::vector<LoadRecord> loads_;
  std::function<void(int status)> on_guest_exit_;
  LoadRecord next_load_;
};

}  // namespace vmsnap::vmm
