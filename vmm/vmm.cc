// SPDX-License-Identifier: MIT
// The built-in VMM: see vmm.h and docs/guest-abi.md.
#include "vmm/vmm.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "base/hex.h"
#include "restore/x86_64/x86_restore.h"
#include "vmm/boot.h"
#include "vmm/control.h"

namespace vmsnap::vmm {
namespace {

constexpr uint16_t kPortSerial = 0x3f8;
constexpr uint16_t kPortSerialLsr = 0x3fd;
constexpr uint16_t kPortExit = 0xf4;
constexpr uint16_t kPortDoorbell = 0xf5;

// Kicks a vCPU thread out of KVM_RUN: the handler does nothing, the ioctl
// returns EINTR. Installed without SA_RESTART.
const int kKickSignal = SIGUSR1;

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ::sigaction(kKickSignal, &sa, nullptr);
  });
}

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

Vmm::~Vmm() {
  if (!threads_.empty()) {
    Stop(std::nullopt, Status::Ok());
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  if (event_fd_ >= 0) ::close(event_fd_);
  if (serial_) {
    std::fflush(serial_);
    if (own_serial_) std::fclose(serial_);
  }
}

Status Vmm::Init(const VmmOptions& options) {
  options_ = options;
  InstallKickHandler();
  if (options_.serial.empty() || options_.serial == "-") {
    serial_ = stdout;
  } else {
    serial_ = std::fopen(options_.serial.c_str(), "w");
    if (!serial_) return Status::FromErrno(errno, "cannot open serial output " + options_.serial);
    own_serial_ = true;
  }
  event_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (event_fd_ < 0) return Status::FromErrno(errno, "eventfd");
  std::string device = options_.kvm_device.empty() ? kvm::DevicePath() : options_.kvm_device;
  VMSNAP_ASSIGN_OR_RETURN(system_, kvm::System::Open(device));
  VMSNAP_ASSIGN_OR_RETURN(vm_, system_->CreateVm());
  vm_ops_ = std::make_unique<kvm::x86::RealVmOps>(vm_.get());
  // The dirty ring can only be enabled before any vCPU exists.
  if (options_.dirty_tracking != capture::dirty::Mode::kOff) {
    VMSNAP_ASSIGN_OR_RETURN(dirty_, capture::dirty::VmDirtyTracking::Prepare(vm_->fd(), options_.dirty_tracking));
  }
  return Status::Ok();
}

Status Vmm::CreateVm(const kvm::x86::VmConfig& config) {
  vm_config_ = config;
  // Memory slots before the irqchip: on this host the first memslot change
  // after KVM_CREATE_IRQCHIP costs 5-10 ms whatever the slot's size (measured
  // with a bare VM: slots first, the whole VM set-up takes ~2 ms), which is
  // most of a lazy load's start. No capability a snapshot replays
  // (ApplyVmConfig) needs to precede the slots; the dirty ring, which does
  // affect them, was enabled in Init.
  //
  // With the dirty ring, the slots are registered already logging, so that
  // the tracker's Start() (when the VM starts running) changes nothing in
  // KVM: a change would be the first after the irqchip. Nothing writes guest
  // memory through KVM before the vCPUs run, so no write is logged early.
  // (The bitmap tracker keeps switching the flag itself: with
  // KVM_DIRTY_LOG_INITIALLY_SET it must be switched on after
  // MANUAL_DIRTY_LOG_PROTECT2, which its creation enables.)
  const uint32_t extra = dirty_ && dirty_->mode() == capture::dirty::Mode::kRing
                             ? static_cast<uint32_t>(KVM_MEM_LOG_DIRTY_PAGES)
                             : 0u;
  VMSNAP_RETURN_IF_ERROR(memory_->Register(*vm_, extra));
  VMSNAP_RETURN_IF_ERROR(restore::x86::ApplyVmConfig(*vm_ops_, config));
  if (dirty_) VMSNAP_RETURN_IF_ERROR(dirty_->SetRegions(memory_->views()));
  return Status::Ok();
}

Status Vmm::CreateVcpus(int count) {
  for (int i = 0; i < count; ++i) {
    VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<kvm::Vcpu> v, vm_->CreateVcpu(i));
    if (dirty_) VMSNAP_RETURN_IF_ERROR(dirty_->AttachVcpu(v->fd(), i));
    vcpu_ops_.push_back(std::make_unique<kvm::x86::RealVcpuOps>(v.get()));
    vcpus_.push_back(std::move(v));
  }
  std::vector<kvm::x86::VcpuOps*> ops;
  for (auto& o : vcpu_ops_) ops.push_back(o.get());
  capturer_ = std::make_unique<capture::x86::X86Capturer>(vm_ops_.get(), ops, vm_config_);
  return Status::Ok();
}

Result<std::unique_ptr<Vmm>> Vmm::Boot(const BootConfig& boot, const VmmOptions& options) {
  if (boot.vcpus < 1 || boot.vcpus > kMaxVcpus) {
    return Status::InvalidArgument("--vcpus must be between 1 and " + std::to_string(kMaxVcpus));
  }
  std::unique_ptr<Vmm> vmm(new Vmm());
  VMSNAP_RETURN_IF_ERROR(vmm->Init(options));
  VMSNAP_ASSIGN_OR_RETURN(vmm->memory_, GuestMemory::Create(boot.mem_size, boot.mem_file));
  if (vmm->memory_->total_size() < 2 * kFlatLoadAddr) {
    return Status::InvalidArgument("guest RAM must be at least 2 MiB");
  }
  VMSNAP_RETURN_IF_ERROR(WriteBootStructures(*vmm->memory_));
  VMSNAP_ASSIGN_OR_RETURN(uint64_t entry, LoadImage(boot.image, *vmm->memory_));

  kvm::x86::VmConfig config;
  config.tss_addr = kTssAddr;
  config.identity_map_addr = kIdentityMapAddr;
  config.irqchip = true;
  config.pit = true;
  config.pit_flags = KVM_PIT_SPEAKER_DUMMY;
  VMSNAP_ASSIGN_OR_RETURN(int payload, vmm->vm_ops_->CheckExtension(KVM_CAP_EXCEPTION_PAYLOAD));
  if (payload > 0) {
    // Exception payloads (CR2/DR6 of a pending #PF/#DB) then travel in
    // kvm_vcpu_events instead of being applied early.
    config.enabled_caps.push_back({KVM_CAP_EXCEPTION_PAYLOAD, "KVM_CAP_EXCEPTION_PAYLOAD", {1}});
  }
  VMSNAP_RETURN_IF_ERROR(vmm->CreateVm(config));
  VMSNAP_RETURN_IF_ERROR(vmm->CreateVcpus(boot.vcpus));
  VMSNAP_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> cpuid, vmm->vm_ops_->SupportedCpuid());
  for (auto& ops : vmm->vcpu_ops_) {
    VMSNAP_RETURN_IF_ERROR(SetupVcpu(*ops, boot.vcpus, vmm->memory_->total_size(), entry, cpuid));
  }
  return vmm;
}

Result<std::unique_ptr<Vmm>> Vmm::Restore(const std::string& snapshot, const VmmOptions& options,
                                          restore::MemoryLoader* loader) {
  // The snapshot is checked before any KVM object exists, so a bad or
  // foreign snapshot fails the same way on any host.
  // Opened once: the loader and the dirty tracking's parent use this copy.
  VMSNAP_ASSIGN_OR_RETURN(SnapshotChain opened, restore::OpenSnapshot(snapshot));
  auto shared = std::make_shared<const SnapshotChain>(std::move(opened));
  const SnapshotChain& chain = *shared;
  VMSNAP_RETURN_IF_ERROR(restore::CheckArch(chain, schema::Arch::X8664));
  schema::Manifest::Reader m = chain.leaf().manifest();
  if (!m.getVm().isX8664()) return Status::Corruption("snapshot " + snapshot + " has no x86_64 VM state");
  auto vcpus = m.getVcpus();
  if (vcpus.size() == 0 || vcpus.size() > static_cast<unsigned>(kMaxVcpus)) {
    return Status::Corruption("snapshot " + snapshot + " has " + std::to_string(vcpus.size()) + " vCPUs");
  }
  for (unsigned i = 0; i < vcpus.size(); ++i) {
    if (vcpus[i].getId() != i) return Status::Corruption("snapshot vCPU ids are not 0..n-1");
  }
  std::vector<kvm::GuestRegion> layout;
  for (auto r : m.getMemory().getRegions()) {
    kvm::GuestRegion g;
    g.slot = r.getSlot();
    g.gpa = r.getGuestPhysAddr();
    g.size = r.getSize();
    // Dirty logging is the old VMM's business; the new one enables it when it
    // needs it.
    g.flags = r.getFlags() & ~static_cast<uint32_t>(KVM_MEM_LOG_DIRTY_PAGES);
    g.name = r.getName();
    layout.push_back(g);
  }
  if (layout.empty()) return Status::Corruption("snapshot " + snapshot + " has no memory regions");

  std::unique_ptr<Vmm> vmm(new Vmm());
  VMSNAP_RETURN_IF_ERROR(vmm->Init(options));
  // Refuse, before anything runs, a snapshot whose CPUID or XSAVE layout
  // this host cannot provide.
  VMSNAP_RETURN_IF_ERROR(restore::x86::CheckHost(*vmm->vm_ops_, m));
  VMSNAP_ASSIGN_OR_RETURN(vmm->memory_, GuestMemory::CreateRegions(layout));
  // VM configuration first: caps, TSS/identity map, irqchip and PIT must
  // exist before vCPUs; then the slots.
  VMSNAP_RETURN_IF_ERROR(vmm->CreateVm(restore::x86::ConfigFromManifest(m.getVm().getX8664().getConfig())));
  restore::EagerMemoryLoader eager;
  VMSNAP_RETURN_IF_ERROR((loader ? loader : &eager)->LoadShared(shared, vmm->memory_->views()));
  VMSNAP_RETURN_IF_ERROR(vmm->CreateVcpus(static_cast<int>(vcpus.size())));
  // Still before anything runs: refuse CPUID features this host lacks.
  VMSNAP_RETURN_IF_ERROR(restore::x86::CheckCpuid(*vmm->vm_ops_, *vmm->vcpu_ops_[0], m));
  std::vector<kvm::x86::VcpuOps*> ops;
  for (auto& o : vmm->vcpu_ops_) ops.push_back(o.get());
  VMSNAP_RETURN_IF_ERROR(restore::x86::RestoreState(*vmm->vm_ops_, ops, m));
  // The restored memory is SNAPSHOT's: incremental snapshots build on it.
  if (vmm->dirty_) {
    capture::dirty::ParentInfo loaded;
    loaded.id = chain.leaf().id();
    loaded.path = snapshot;
    loaded.depth = m.hasParent() ? m.getParent().getDepth() : 0;
    vmm->dirty_->set_last_snapshot(std::move(loaded));
  }
  return vmm;
}

void Vmm::Notify() {
  uint64_t one = 1;
  ssize_t n = ::write(event_fd_, &one, sizeof one);
  (void)n;
}

void Vmm::RequestPause() {
  std::lock_guard<std::mutex> lk(mu_);
  ++pause_depth_;
  // immediate_exit covers a thread about to enter KVM_RUN; the signal one
  // already inside it.
  for (auto& v : vcpus_) v->run()->immediate_exit = 1;
  for (auto& t : threads_) ::pthread_kill(t.native_handle(), kKickSignal);
}

void Vmm::WaitPaused() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [this] { return parked_ == threads_.size() || stop_; });
}

void Vmm::Resume() {
  std::lock_guard<std::mutex> lk(mu_);
  if (pause_depth_ > 0) --pause_depth_;
  if (pause_depth_ == 0) cv_.notify_all();
}

void Vmm::Stop(std::optional<int> exit_status, Status error) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!stop_) {
      stop_ = true;
      exit_status_ = exit_status;
      error_ = std::move(error);
    }
    for (auto& v : vcpus_) v->run()->immediate_exit = 1;
    for (auto& t : threads_) ::pthread_kill(t.native_handle(), kKickSignal);
    cv_.notify_all();
  }
  Notify();
}

Status Vmm::ParkVcpu(size_t i) {
  kvm::Vcpu& v = *vcpus_[i];
  // After an `in` exit the value user space put in the run area reaches RAX
  // only when KVM_RUN is entered again (KVM-NOTES.md); with immediate_exit
  // set, KVM completes the instruction and returns EINTR at once, so the
  // state captured next is consistent.
  v.run()->immediate_exit = 1;
  for (int tries = 0; tries < 64; ++tries) {
    VMSNAP_ASSIGN_OR_RETURN(kvm::Vcpu::RunResult r, v.Run());
    if (r == kvm::Vcpu::RunResult::kInterrupted) return Status::Ok();
    // Completing a string I/O instruction can exit again; serve it.
    if (!HandleExit(i)) return Status::Ok();
  }
  return Status::Kvm("KVM_RUN" + v.where() + ": I/O did not complete while pausing");
}

void Vmm::SerialWrite(const uint8_t* data, size_t len) {
  std::lock_guard<std::mutex> lk(serial_mu_);
  std::fwrite(data, 1, len, serial_);
  if (std::memchr(data, '\n', len)) std::fflush(serial_);
}

bool Vmm::HandleExit(size_t i) {
  kvm::Vcpu& v = *vcpus_[i];
  kvm_run* run = v.run();
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      const size_t size = run->io.size;
      const size_t count = run->io.count;
      if (run->io.direction == KVM_EXIT_IO_OUT) {
        switch (run->io.port) {
          case kPortSerial:
            for (size_t k = 0; k < count; ++k) SerialWrite(data + k * size, 1);
            break;
          case kPortExit:
            Stop(data[0] & 0xff, Status::Ok());
            return false;
          case kPortDoorbell: {
            // Pause right here: RIP is already past the `out`, so a snapshot
            // taken now resumes after it. The main thread captures.
            RequestPause();
            {
              std::lock_guard<std::mutex> lk(mu_);
              ++pending_doorbells_;
            }
            Notify();
            break;
          }
          default:
            break;  // writes to other ports are ignored
        }
      } else {
        std::memset(data, 0xff, size * count);
        if (run->io.port == kPortSerialLsr) {
          for (size_t k = 0; k < count; ++k) data[k * size] = 0x60;  // transmitter empty
        }
      }
      return true;
    }
    case KVM_EXIT_MMIO:
      if (!run->mmio.is_write) std::memset(run->mmio.data, 0xff, sizeof run->mmio.data);
      return true;
    case KVM_EXIT_HLT:
    case KVM_EXIT_INTR:
      return true;
    case KVM_EXIT_DIRTY_RING_FULL:
      // Harvest and reset the rings, then re-enter (docs/checkpoint-cycles.md).
      if (dirty_) {
        Status s = dirty_->tracker().HandleRingFull(static_cast<int>(i));
        if (!s.ok()) {
          Stop(std::nullopt, s);
          return false;
        }
      }
      return true;
    case KVM_EXIT_SHUTDOWN:
      Stop(std::nullopt, Status::Guest("guest shut down (triple fault)" + v.where()));
      return false;
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string rip;
      auto regs = vcpu_ops_[i]->GetRegs();
      if (regs.ok()) rip = " at RIP " + Hex(regs->rip);
      Stop(std::nullopt, Status::Kvm("KVM_RUN" + v.where() + ": KVM internal error, suberror " +
                                     std::to_string(run->internal.suberror) +
                                     (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                                          ? " (instruction emulation failed" + rip + ")"
                                          : rip)));
      return false;
    }
    case KVM_EXIT_FAIL_ENTRY:
      Stop(std::nullopt, Status::Kvm("KVM_RUN" + v.where() + ": VM entry failed, hardware reason " +
                                     Hex(run->fail_entry.hardware_entry_failure_reason)));
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      Stop(std::nullopt, Status::Guest("guest requested system event " +
                                       std::to_string(run->system_event.type) + v.where()));
      return false;
    default:
      Stop(std::nullopt, Status::Kvm("KVM_RUN" + v.where() + ": unhandled exit reason " +
                                     std::to_string(run->exit_reason)));
      return false;
  }
}

void Vmm::VcpuLoop(size_t i) {
  kvm::Vcpu& v = *vcpus_[i];
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      if (stop_) break;
      if (pause_depth_ > 0) {
        lk.unlock();
        Status s = ParkVcpu(i);
        lk.lock();
        if (!s.ok()) {
          lk.unlock();
          Stop(std::nullopt, s);
          break;
        }
        ++parked_;
        cv_.notify_all();
        cv_.wait(lk, [this] { return pause_depth_ == 0 || stop_; });
        --parked_;
        if (stop_) break;
      }
      v.run()->immediate_exit = 0;
    }
    auto r = v.Run();
    if (!r.ok()) {
      Stop(std::nullopt, r.status());
      break;
    }
    if (*r == kvm::Vcpu::RunResult::kInterrupted) continue;
    if (!HandleExit(i)) break;
  }
}

Result<capture::CaptureResult> Vmm::CaptureNow(const std::string& path, uint64_t pause_ns,
                                               const capture::dirty::SnapshotPlan& plan,
                                               const CompressionSpec& compression) {
  if (pause_hook_) VMSNAP_RETURN_IF_ERROR(pause_hook_(*memory_));
  capture::CaptureOptions opts;
  opts.tool_version = options_.tool_version;
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

void Vmm::HandleControlClient(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  auto reply_error = [fd](const std::string& msg) {
    (void)WriteLine(fd, nlohmann::json{{"ok", false}, {"error", msg}}.dump());
  };
  auto line = ReadLine(fd);
  if (!line.ok()) return;
  nlohmann::json req = nlohmann::json::parse(*line, nullptr, false);
  if (req.is_discarded() || !req.is_object() || !req.contains("cmd") || !req["cmd"].is_string()) {
    return reply_error("malformed request: expected a JSON object with \"cmd\"");
  }
  std::string cmd = req["cmd"];
  if (cmd == "ping") {
    (void)WriteLine(fd, nlohmann::json{{"ok", true}}.dump());
    return;
  }
  if (cmd != "save") return reply_error("unknown command \"" + cmd + "\"");
  if (!req.contains("path") || !req["path"].is_string()) return reply_error("save: missing \"path\"");
  SaveRequest sreq;
  sreq.path = req["path"].get<std::string>();
  if (req.contains("parent") && req["parent"].is_string()) sreq.parent = req["parent"].get<std::string>();
  sreq.live = req.value("live", false);
  if (req.contains("compress")) {
    if (!req["compress"].is_string()) {
      return reply_error("save: \"compress\" must be a string: none, zstd or zstd:LEVEL");
    }
    auto spec = ParseCompressionSpec(req["compress"].get<std::string>());
    if (!spec.ok()) return reply_error("save: " + spec.status().message());
    sreq.compression = *spec;
  }
  bool stop = req.value("stop", false);
  sreq.stop = stop;
  if (req.value("progress", false)) {
    // Progress lines before the reply, at most every 100 ms and the last
    // one always; a client that went away only makes these sends fail.
    auto last = std::make_shared<std::chrono::steady_clock::time_point>();
    save_progress_ = [fd, last](uint64_t done, uint64_t total) {
      auto now = std::chrono::steady_clock::now();
      if (done < total && now - *last < std::chrono::milliseconds(100)) return;
      *last = now;
      (void)WriteLine(fd, nlohmann::json{{"progress", {{"done", done}, {"total", total}}}}.dump());
    };
  }
  capture::dirty::LiveStats live_stats;
  auto r = Save(sreq, &live_stats);
  save_progress_ = nullptr;
  if (!r.ok()) return reply_error(r.status().message());
  nlohmann::json reply{{"ok", true}, {"path", r->path}, {"bytes", r->file_size}, {"id", layout::IdToHex(r->id)}};
  if (sreq.live) {
    reply["rounds"] = live_stats.rounds;
    reply["pause_ns"] = live_stats.pause_ns;
  }
  (void)WriteLine(fd, reply.dump());
  if (stop) Stop(0, Status::Ok());
}

Result<int> Vmm::Run() {
  UniqueFd listen_fd;
  if (!options_.control_socket.empty()) {
    VMSNAP_ASSIGN_OR_RETURN(listen_fd, ListenControl(options_.control_socket));
  }
  // Memory as it is now is the base of the first incremental snapshot.
  if (dirty_) VMSNAP_RETURN_IF_ERROR(dirty_->Start());
  {
    // Threads start under the lock, so a kick never sees a half-built list.
    std::lock_guard<std::mutex> lk(mu_);
    running_ = true;
    for (size_t i = 0; i < vcpus_.size(); ++i) threads_.emplace_back(&Vmm::VcpuLoop, this, i);
  }
  for (;;) {
    pollfd fds[2] = {{event_fd_, POLLIN, 0}, {listen_fd.get(), POLLIN, 0}};
    int n = ::poll(fds, listen_fd.valid() ? 2 : 1, -1);
    if (n < 0 && errno != EINTR) {
      Stop(std::nullopt, Status::FromErrno(errno, "poll"));
    }
    if (n > 0 && (fds[0].revents & POLLIN)) {
      uint64_t v;
      ssize_t r = ::read(event_fd_, &v, sizeof v);
      (void)r;
    }
    int doorbells = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) break;
      doorbells = pending_doorbells_;
      pending_doorbells_ = 0;
    }
    for (int d = 0; d < doorbells; ++d) {
      Status s = HandleDoorbell();
      if (!s.ok()) Stop(std::nullopt, s);
    }
    if (n > 0 && listen_fd.valid() && (fds[1].revents & POLLIN)) {
      UniqueFd client(::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (client.valid()) HandleControlClient(client.get());
    }
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
  running_ = false;
  if (listen_fd.valid()) ::unlink(options_.control_socket.c_str());
  {
    std::lock_guard<std::mutex> lk(serial_mu_);
    std::fflush(serial_);
  }
  if (!error_.ok()) return error_;
  return exit_status_.value_or(0);
}

}  // namespace vmsnap::vmm
