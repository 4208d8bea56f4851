// SPDX-License-Identifier: MIT
// The VMM's life cycle: creating the VM for a boot or a restore, and the
// main thread's loop (doorbells, control clients) while the vCPUs run.
// The vCPU threads live in vcpu_loop.cc, the devices in devices.cc, the
// control protocol in control.cc and snapshots in save.cc.
#include "vmm/vmm.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "lib/cxx.h"
#include "vmm/boot.h"
#include "vmm/control.h"

namespace vmsnap::vmm {
namespace {

// Control clients connected and not yet served; more are refused at once.
constexpr size_t kMaxControlClients = 64;

// The VM configuration of a boot, and of a warm VM (so that snapshots of
// booted guests fit the warm ones).
Result<vmsnap_x86_vm_config> BootVmConfig(kvm::x86::RealVmOps& vm) {
  vmsnap_x86_vm_config config{};
  config.tss_addr = kTssAddr;
  config.identity_map_addr = kIdentityMapAddr;
  config.irqchip = 1;
  config.pit = 1;
  config.pit_flags = KVM_PIT_SPEAKER_DUMMY;
  VMSNAP_ASSIGN_OR_RETURN(int payload, vm.CheckExtension(KVM_CAP_EXCEPTION_PAYLOAD));
  // Exception payloads (CR2/DR6 of a pending #PF/#DB) then travel in
  // kvm_vcpu_events instead of being applied early.
  config.exception_payload = payload > 0 ? 1 : 0;
  return config;
}

}  // namespace

Vmm::~Vmm() {
  if (!threads_.empty()) {
    Stop(std::nullopt, Status::Ok());
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  // The pager before the memory it fills; the C API's handle before the fds
  // it borrows.
  StopPager();
  vmsnap_vm_free(api_);
  vmsnap_close(snap_);
}

void Vmm::StopPager() {
  vmsnap_pager_stop(pager_);
  pager_ = nullptr;
}

Status Vmm::Init(const VmmOptions& options) {
  options_ = options;
  VMSNAP_RETURN_IF_ERROR(serial_.Open(options_.serial));
  AddSerialPorts(ports_, serial_);
  AddExitPort(ports_, [this](int status) {
    if (on_guest_exit_) {
      serial_.Flush();
      on_guest_exit_(status & 0xff);
    }
    Stop(status, Status::Ok());
  });
  AddDoorbellPort(ports_, [this] {
    // Pause right here: RIP is already past the `out`, so a snapshot taken
    // now resumes after it. The main thread captures (HandleDoorbell).
    RequestPause();
    {
      std::lock_guard<std::mutex> lk(mu_);
      ++pending_doorbells_;
    }
    Notify();
  });
  event_fd_.Reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event_fd_.valid()) return Status::FromErrno(errno, "eventfd");
  std::string device = options_.kvm_device.empty() ? kvm::DevicePath() : options_.kvm_device;
  VMSNAP_ASSIGN_OR_RETURN(system_, kvm::System::Open(device));
  VMSNAP_ASSIGN_OR_RETURN(vm_, system_->CreateVm());
  vm_ops_ = std::make_unique<kvm::x86::RealVmOps>(vm_.get());
  VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vm_attach(vm_->fd(), &api_)));
  // The dirty ring can only be enabled before any vCPU exists.
  if (options_.dirty_tracking != capture::dirty::Mode::kOff) {
    vmsnap_dirty_mode mode = !options_.dirty_tracking                                  ? VMSNAP_DIRTY_DEFAULT
                             : *options_.dirty_tracking == capture::dirty::Mode::kRing ? VMSNAP_DIRTY_RING
                                                                                       : VMSNAP_DIRTY_BITMAP;
    VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vm_dirty_enable(api_, mode)));
    dirty_ = true;
  }
  return Status::Ok();
}

Status Vmm::RegisterMemory() {
  // Memory slots before the irqchip: on this host the first memslot change
  // after KVM_CREATE_IRQCHIP costs 5-10 ms whatever the slot's size (measured
  // with a bare VM: slots first, the whole VM set-up takes ~2 ms), which is
  // most of a lazy load's start. No capability a snapshot replays
  // (ApplyVmConfig) needs to precede the slots; the dirty ring, which does
  // affect them, was enabled in Init.
  //
  // With the dirty ring, vmsnap_vm_add_memory registers the slots already
  // logging, so that starting the tracker (when the VM starts running)
  // changes nothing in KVM: a change would be the first after the irqchip.
  for (const auto& r : memory_->regions()) {
    const kvm::GuestRegion& v = r->view();
    vmsnap_region region{v.slot, v.flags, v.gpa, v.size, v.host, v.name.c_str()};
    VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vm_add_memory(api_, &region)));
  }
  return Status::Ok();
}

Status Vmm::CreateVm(const vmsnap_x86_vm_config& config) {
  VMSNAP_RETURN_IF_ERROR(RegisterMemory());
  return capi::StatusOf(vmsnap_vm_configure(api_, &config));
}

Status Vmm::CreateVcpus(int count) {
  for (int i = 0; i < count; ++i) {
    VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<kvm::Vcpu> v, vm_->CreateVcpu(i));
    VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vm_add_vcpu(api_, static_cast<uint32_t>(i), v->fd())));
    vcpu_ops_.push_back(std::make_unique<kvm::x86::RealVcpuOps>(v.get()));
    vcpus_.push_back(std::move(v));
  }
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

  VMSNAP_ASSIGN_OR_RETURN(vmsnap_x86_vm_config config, BootVmConfig(*vmm->vm_ops_));
  VMSNAP_RETURN_IF_ERROR(vmm->CreateVm(config));
  VMSNAP_RETURN_IF_ERROR(vmm->CreateVcpus(boot.vcpus));
  VMSNAP_ASSIGN_OR_RETURN(std::vector<kvm_cpuid_entry2> cpuid, vmm->vm_ops_->SupportedCpuid());
  for (auto& ops : vmm->vcpu_ops_) {
    VMSNAP_RETURN_IF_ERROR(SetupVcpu(*ops, boot.vcpus, vmm->memory_->total_size(), entry, cpuid));
  }
  VMSNAP_RETURN_IF_ERROR(vmm->InheritLineage(nullptr, false));
  return vmm;
}

Status Vmm::InheritLineage(const SnapshotChain* from, bool warm) {
  loads_.clear();
  next_load_ = LoadRecord{};
  next_load_.warm = warm;
  if (from == nullptr) return Status::Ok();
  VMSNAP_ASSIGN_OR_RETURN(loads_, LoadHistoryOf(from->leaf().manifest()));
  next_load_.snapshot_id = from->leaf().id();
  return Status::Ok();
}

Status Vmm::StartGeneration() {
  size_t got = 0;
  // Testing hook (docs/guest-abi.md): an all-zero ID, so that two runs of a
  // deterministic guest leave the same memory.
  if (const char* fixed = std::getenv("VMSNAP_TEST_FIXED_GENERATION_ID"); fixed && *fixed == '1') {
    generation_id_.fill(0);
    got = generation_id_.size();
  }
  while (got < generation_id_.size()) {
    ssize_t n = ::getrandom(generation_id_.data() + got, generation_id_.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "getrandom (generation ID)");
    got += size_t(n);
  }
  uint8_t* p = memory_->HostPtr(kGenerationIdAddr, generation_id_.size());
  if (p == nullptr) return Status::InvalidArgument("guest RAM does not hold the generation ID page");
  // Under the lazy pager this access faults the page in from the snapshot
  // first, so the bytes around the ID keep their saved contents.
  std::memcpy(p, generation_id_.data(), generation_id_.size());
  next_load_.generation_id = generation_id_;
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  next_load_.time_unix_ns = int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  loads_.push_back(next_load_);
  return Status::Ok();
}

Result<std::unique_ptr<Vmm>> Vmm::Prepare(const WarmShape& shape, const VmmOptions& options) {
  if (shape.vcpus < 1 || shape.vcpus > kMaxVcpus) {
    return Status::InvalidArgument("--vcpus must be between 1 and " + std::to_string(kMaxVcpus));
  }
  std::unique_ptr<Vmm> vmm(new Vmm());
  VMSNAP_RETURN_IF_ERROR(vmm->Init(options));
  // Anonymous and never touched: the lazy pager needs it so (it registers it
  // with userfaultfd when the snapshot comes).
  VMSNAP_ASSIGN_OR_RETURN(vmm->memory_, GuestMemory::Create(shape.mem_size, ""));
  VMSNAP_ASSIGN_OR_RETURN(vmsnap_x86_vm_config config, BootVmConfig(*vmm->vm_ops_));
  VMSNAP_RETURN_IF_ERROR(vmm->CreateVm(config));
  VMSNAP_RETURN_IF_ERROR(vmm->CreateVcpus(shape.vcpus));
  // What this host's KVM offers a vCPU is found now rather than when a
  // snapshot comes (the restore checks the snapshot's CPUID against it).
  VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vm_prepare_warm(vmm->api_)));
  // The lazy pager's set-up (userfaultfd, its threads, its decoders' memory)
  // is done now, while the VM waits, rather than on the way to the guest's
  // first instruction. Where userfaultfd is missing the load says so.
  (void)vmsnap_vm_arm_pager(vmm->api_);
  vmm->warm_ = true;
  return vmm;
}

std::string Vmm::WarmMismatch(const SnapshotChain& chain) const {
  vmsnap_snapshot* snap = capi::WrapChain(std::shared_ptr<const SnapshotChain>(&chain, [](const SnapshotChain*) {}),
                                          chain.leaf().path());
  const int rc = vmsnap_vm_check_fit(api_, snap);
  vmsnap_close(snap);
  return rc == VMSNAP_OK ? "" : vmsnap_last_error();
}

namespace {

// The load plan's callbacks, called by the C API with the plan as context.
void OnPagerError(int, const char* message, void* ctx) { static_cast<LoadPlan*>(ctx)->on_error(message); }
void OnProgress(uint64_t done, uint64_t total, void* ctx) { static_cast<LoadPlan*>(ctx)->progress(done, total); }
int OnFetch(uint32_t layer, uint64_t chunk, char* message, size_t size, void* ctx) {
  Status s = static_cast<LoadPlan*>(ctx)->fetch(layer, chunk);
  if (s.ok()) return VMSNAP_OK;
  std::snprintf(message, size, "%s", s.message().c_str());
  return VMSNAP_E_IO;
}

}  // namespace

Status Vmm::RestoreSnapshot(LoadPlan load, bool untimed_only) {
  // The restore order (restore::RestoreSteps) behind the C API: checks, the
  // memory slots, the VM configuration, memory, vCPUs, state. The VMM does
  // not enable dirty logging through the API (it tracks dirty pages
  // itself), so the snapshot's is replayed, as a restore always did here.
  vmsnap_restore_options ro{sizeof ro, VMSNAP_RESTORE_REPLAY_DIRTY_LOGGING};
  VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vm_restore_check(api_, snap_, &ro)));
  uint32_t vcpus = 0;
  if (!warm_) {
    uint32_t count = 0;
    VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_region_count(snap_, &count)));
    std::vector<kvm::GuestRegion> layout(count);
    for (uint32_t i = 0; i < count; ++i) {
      vmsnap_region r{};
      VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_region_at(snap_, i, &r)));
      // Dirty logging is the old VMM's business; this one enables its own.
      layout[i] = kvm::GuestRegion{r.slot, r.flags & ~uint32_t(KVM_MEM_LOG_DIRTY_PAGES), r.guest_phys_addr, r.size,
                                   nullptr, r.name ? r.name : ""};
    }
    VMSNAP_ASSIGN_OR_RETURN(memory_, GuestMemory::CreateRegions(layout));
    // The slots before the configuration: see RegisterMemory.
    VMSNAP_RETURN_IF_ERROR(RegisterMemory());
    VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vcpu_count(snap_, &vcpus)));
  }
  VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vm_restore_config(api_, snap_)));
  load_ = std::make_unique<LoadPlan>(std::move(load));
  vmsnap_load_options lo{};
  lo.struct_size = sizeof lo;
  lo.mode = load_->lazy ? VMSNAP_MEMORY_LAZY : VMSNAP_MEMORY_EAGER;
  lo.threads = load_->threads;
  lo.on_error = load_->on_error ? OnPagerError : nullptr;
  lo.on_error_ctx = load_.get();
  lo.progress = load_->progress ? OnProgress : nullptr;
  lo.progress_ctx = load_.get();
  lo.flags = (load_->map_file ? VMSNAP_LOAD_MAP_FILE : 0u) | (load_->build_image ? VMSNAP_LOAD_BUILD_IMAGE : 0u) |
             (load_->hold_fill ? VMSNAP_LOAD_HOLD_FILL : 0u) | VMSNAP_LOAD_START_PAGES;
  if (!load_->verified_dir.empty()) lo.verified_dir = load_->verified_dir.c_str();
  if (!load_->image_dir.empty()) lo.image_dir = load_->image_dir.c_str();
  lo.fetch = load_->fetch ? OnFetch : nullptr;
  lo.fetch_ctx = load_.get();
  // Run writes the generation ID before the guest starts: its page comes in
  // while the vCPUs are restored rather than as a fault then; so do the
  // pages the vCPUs resume on (VMSNAP_LOAD_START_PAGES), which a warm VM
  // bound ahead holds before it is asked to start.
  static constexpr uint64_t kFirstPages[] = {kGenerationIdAddr};
  lo.first_pages = kFirstPages;
  lo.first_page_count = 1;
  VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vm_load_memory(api_, snap_, &lo, &pager_)));
  if (!warm_) {
    Status s = CreateVcpus(static_cast<int>(vcpus));
    if (!s.ok()) {
      StopPager();  // it must not fill memory that goes next
      return s;
    }
  }
  // A failure here stops the pager (the C API does).
  if (untimed_only) return capi::StatusOf(vmsnap_vm_restore_untimed_state(api_, snap_));
  return capi::StatusOf(vmsnap_vm_restore_state(api_, snap_));
}

Result<std::unique_ptr<Vmm>> Vmm::Restore(const std::string& snapshot, const VmmOptions& options, LoadPlan load) {
  // Opened once: the C API's handle, the lineage and the dirty tracking's
  // parent use this copy.
  VMSNAP_ASSIGN_OR_RETURN(SnapshotChain opened, restore::OpenSnapshot(snapshot));
  auto shared = std::make_shared<const SnapshotChain>(std::move(opened));
  // A foreign snapshot is refused before any KVM object exists.
  VMSNAP_RETURN_IF_ERROR(restore::CheckArch(*shared, schema::Arch::X8664));
  std::unique_ptr<Vmm> vmm(new Vmm());
  vmm->snap_ = capi::WrapChain(shared, snapshot);
  VMSNAP_RETURN_IF_ERROR(vmm->Init(options));
  VMSNAP_RETURN_IF_ERROR(vmm->RestoreSnapshot(std::move(load)));
  // (The restored memory is SNAPSHOT's: the C API makes it the base of
  // incremental snapshots.)
  VMSNAP_RETURN_IF_ERROR(vmm->InheritLineage(shared.get(), false));
  return vmm;
}

Status Vmm::Bind(std::shared_ptr<const SnapshotChain> chain, LoadPlan load) {
  if (snap_) return Status::InvalidArgument("this warm VM was restored into already");
  snap_ = capi::WrapChain(chain, chain->leaf().path());
  bound_ = chain;
  Status s = RestoreSnapshot(std::move(load), /*untimed_only=*/true);
  if (!s.ok()) {
    Status undone = Unbind();
    if (!undone.ok()) return Status(s.code(), s.message() + "; undoing it: " + undone.message());
  }
  return s;
}

Status Vmm::Unbind() {
  if (!snap_ || !bound_) return Status::Ok();
  // Cancelled first: it stops the pager without fencing the pages it never
  // filled, since it replaces the memory next.
  Status s = capi::StatusOf(vmsnap_vm_restore_cancel(api_));
  StopPager();
  vmsnap_close(snap_);
  snap_ = nullptr;
  bound_.reset();
  load_.reset();
  return s;
}

void Vmm::ArmPager() {
  if (warm_ && !snap_) (void)vmsnap_vm_arm_pager(api_);
}


Status Vmm::RestoreWarm(std::shared_ptr<const SnapshotChain> chain, LoadPlan load) {
  if (bound_ && bound_ != chain) VMSNAP_RETURN_IF_ERROR(Unbind());
  if (!bound_) VMSNAP_RETURN_IF_ERROR(Bind(chain, std::move(load)));
  // What runs from the moment it is set (the LAPIC timer, the TSC, the
  // PIT, kvmclock) is set now, just before the guest starts, whenever the
  // rest was restored.
  bound_.reset();
  VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vm_restore_state(api_, snap_)));
  // A binding that pages in held its fill until now.
  vmsnap_pager_release(pager_);
  return InheritLineage(chain.get(), true);
}

Result<int> Vmm::Run() {
  UniqueFd listen_fd;
  if (!options_.control_socket.empty()) {
    VMSNAP_ASSIGN_OR_RETURN(listen_fd, ListenControl(options_.control_socket));
  }
  // The generation ID is written here, not at restore: a VM restored and
  // saved without running keeps the snapshot's memory exactly.
  std::array<uint8_t, 16> before{};
  if (const uint8_t* p = memory_->HostPtr(kGenerationIdAddr, before.size())) {
    std::memcpy(before.data(), p, before.size());
  }
  VMSNAP_RETURN_IF_ERROR(StartGeneration());
  const bool generation_changed = before != generation_id_;
  // Memory as it is now is the base of the first incremental snapshot, but
  // for the ID just written (KVM does not see the VMM's own writes): an
  // incremental snapshot stores the ID this VM's guest saw.
  if (dirty_) {
    VMSNAP_RETURN_IF_ERROR(capi::StatusOf(vmsnap_vm_dirty_start(api_)));
    if (generation_changed) (void)vmsnap_vm_dirty_mark(api_, kGenerationIdAddr, generation_id_.size());
  }
  StartVcpus();
  // Clients are served from this one loop, each request line gathered as
  // its bytes arrive and bounded by a deadline from the moment it connects:
  // a client that sends slowly (or not at all) delays no other client and no
  // doorbell.
  using Clock = std::chrono::steady_clock;
  struct Client {
    UniqueFd fd;
    LineReader reader;
    Clock::time_point deadline;
    bool draining = false;  // refused (line too long): reading what is left, then closing
  };
  std::vector<Client> clients;
  for (;;) {
    std::vector<pollfd> fds{{event_fd_.get(), POLLIN, 0}};
    if (listen_fd.valid()) fds.push_back({listen_fd.get(), POLLIN, 0});
    const size_t hangup_at = fds.size();
    if (options_.hangup_fd >= 0) fds.push_back({options_.hangup_fd, POLLRDHUP, 0});
    const size_t first_client = fds.size();
    int timeout_ms = -1;
    const Clock::time_point now = Clock::now();
    for (const Client& c : clients) {
      fds.push_back({c.fd.get(), POLLIN, 0});
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(c.deadline - now).count();
      const int ms = int(std::clamp<int64_t>(left, 0, 60'000));
      timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
    }
    int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) {
      Stop(std::nullopt, Status::FromErrno(errno, "poll"));
    }
    if (n > 0 && (fds[0].revents & POLLIN)) {
      uint64_t v;
      ssize_t r = ::read(event_fd_.get(), &v, sizeof v);
      (void)r;
    }
    if (n > 0 && options_.hangup_fd >= 0 && (fds[hangup_at].revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      Stop(std::nullopt, Status::Io("the client that started this VM went away"));
    }
    int doorbells = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) break;
      doorbells = pending_doorbells_;
      pending_doorbells_ = 0;
    }
    for (int d = 0; d < doorbells; ++d) {
      // A failed snapshot is reported and the VM goes on, as after a failed
      // control-socket save: the guest is never lost to a failed save.
      Status s = HandleDoorbell();
      if (!s.ok() && options_.report) options_.report(s);
    }
    const size_t polled = clients.size();
    std::vector<bool> done(polled, false);
    for (size_t i = 0; n > 0 && i < polled; ++i) {
      if (!(fds[first_client + i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Client& c = clients[i];
      LineReader::State st = c.reader.Read(c.fd.get());
      if (c.draining) {
        done[i] = st == LineReader::State::kClosed;
        c.reader = LineReader();  // what was read is discarded
        continue;
      }
      switch (st) {
        case LineReader::State::kMore: break;
        case LineReader::State::kClosed: done[i] = true; break;
        case LineReader::State::kLine:
          HandleControlRequest(c.fd.get(), c.reader.line());
          done[i] = true;
          break;
        case LineReader::State::kTooLong:
          // Reply, then read the rest before closing: closing with unread
          // input would reset the connection and could lose the reply.
          (void)WriteLine(c.fd.get(), nlohmann::json{{"ok", false},
                                                     {"error", "request line longer than " +
                                                                   std::to_string(kMaxRequestLine) + " bytes"}}
                                              .dump());
          ::shutdown(c.fd.get(), SHUT_WR);
          c.draining = true;
          c.reader = LineReader();
          break;
      }
    }
    const Clock::time_point after = Clock::now();
    for (size_t i = 0; i < polled; ++i) {
      if (done[i] || after < clients[i].deadline) continue;
      if (!clients[i].draining) {
        (void)WriteLine(clients[i].fd.get(),
                        nlohmann::json{{"ok", false}, {"error", "no complete request line within 5 s"}}.dump());
      }
      done[i] = true;
    }
    for (size_t i = polled; i-- > 0;) {
      if (done[i]) clients.erase(clients.begin() + long(i));
    }
    if (n > 0 && listen_fd.valid() && (fds[1].revents & POLLIN)) {
      UniqueFd fd(::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (fd.valid()) {
        // Replies are small; a client that never reads them must not block
        // this loop for long either.
        timeval tv{5, 0};
        ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (clients.size() >= kMaxControlClients) {
          (void)WriteLine(fd.get(), nlohmann::json{{"ok", false}, {"error", "too many clients at once"}}.dump());
        } else {
          clients.push_back(Client{std::move(fd), LineReader(), Clock::now() + std::chrono::seconds(5)});
        }
      }
    }
  }
  JoinVcpus();
  if (listen_fd.valid()) ::unlink(options_.control_socket.c_str());
  serial_.Flush();
  if (!error_.ok()) return error_;
  return exit_status_.value_or(0);
}

}  // namespace vmsnap::vmm
