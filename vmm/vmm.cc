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
#include <cstdlib>
#include <cstring>
#include <vector>

#include "restore/x86_64/x86_restore.h"
#include "vmm/boot.h"
#include "vmm/control.h"

namespace vmsnap::vmm {
namespace {

// Control clients connected and not yet served; more are refused at once.
constexpr size_t kMaxControlClients = 64;

// The VM configuration of a boot, and of a warm VM (so that snapshots of
// booted guests fit the warm ones).
Result<kvm::x86::VmConfig> BootVmConfig(kvm::x86::RealVmOps& vm) {
  kvm::x86::VmConfig config;
  config.tss_addr = kTssAddr;
  config.identity_map_addr = kIdentityMapAddr;
  config.irqchip = true;
  config.pit = true;
  config.pit_flags = KVM_PIT_SPEAKER_DUMMY;
  VMSNAP_ASSIGN_OR_RETURN(int payload, vm.CheckExtension(KVM_CAP_EXCEPTION_PAYLOAD));
  if (payload > 0) {
    // Exception payloads (CR2/DR6 of a pending #PF/#DB) then travel in
    // kvm_vcpu_events instead of being applied early.
    config.enabled_caps.push_back({KVM_CAP_EXCEPTION_PAYLOAD, "KVM_CAP_EXCEPTION_PAYLOAD", {1}});
  }
  return config;
}

}  // namespace

Vmm::~Vmm() {
  if (!threads_.empty()) {
    Stop(std::nullopt, Status::Ok());
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
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
  // The dirty ring can only be enabled before any vCPU exists.
  if (options_.dirty_tracking != capture::dirty::Mode::kOff) {
    VMSNAP_ASSIGN_OR_RETURN(dirty_, capture::dirty::VmDirtyTracking::Prepare(vm_->fd(), options_.dirty_tracking));
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
  return memory_->Register(*vm_, extra);
}

Status Vmm::VmConfigured() {
  if (dirty_) VMSNAP_RETURN_IF_ERROR(dirty_->SetRegions(memory_->views()));
  return Status::Ok();
}

Status Vmm::CreateVm(const kvm::x86::VmConfig& config) {
  vm_config_ = config;
  VMSNAP_RETURN_IF_ERROR(RegisterMemory());
  VMSNAP_RETURN_IF_ERROR(restore::x86::ApplyVmConfig(*vm_ops_, config));
  return VmConfigured();
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

  VMSNAP_ASSIGN_OR_RETURN(kvm::x86::VmConfig config, BootVmConfig(*vmm->vm_ops_));
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
  VMSNAP_ASSIGN_OR_RETURN(kvm::x86::VmConfig config, BootVmConfig(*vmm->vm_ops_));
  VMSNAP_RETURN_IF_ERROR(vmm->CreateVm(config));
  VMSNAP_RETURN_IF_ERROR(vmm->CreateVcpus(shape.vcpus));
  // What this host's KVM offers a vCPU, found now rather than when a
  // snapshot comes (RestoreWarm checks the snapshot's CPUID against it).
  VMSNAP_ASSIGN_OR_RETURN(vmm->warm_host_cpuid_, restore::x86::HostCpuid(*vmm->vm_ops_, *vmm->vcpu_ops_[0]));
  return vmm;
}

std::string Vmm::WarmMismatch(const SnapshotChain& chain) const {
  schema::Manifest::Reader m = chain.leaf().manifest();
  if (m.getArch() != schema::Arch::X8664 || !m.getVm().isX8664()) return "it is not an x86_64 snapshot";
  if (m.getVcpus().size() != vcpus_.size()) {
    return "it has " + std::to_string(m.getVcpus().size()) + " vCPUs, the warm VMs " +
           std::to_string(vcpus_.size());
  }
  auto regions = m.getMemory().getRegions();
  const std::vector<kvm::GuestRegion> views = memory_->views();
  uint64_t snap_total = 0;
  for (auto r : regions) snap_total += r.getSize();
  bool same = regions.size() == views.size();
  for (size_t i = 0; same && i < views.size(); ++i) {
    auto r = regions[static_cast<unsigned>(i)];
    same = r.getSlot() == views[i].slot && r.getGuestPhysAddr() == views[i].gpa && r.getSize() == views[i].size &&
           (r.getFlags() & ~uint32_t(KVM_MEM_LOG_DIRTY_PAGES)) == views[i].flags;
  }
  if (!same) {
    return "its memory (" + std::to_string(snap_total >> 20) + " MiB in " + std::to_string(regions.size()) +
           " regions) is not laid out as the warm VMs' (" + std::to_string(memory_->total_size() >> 20) +
           " MiB in " + std::to_string(views.size()) + ")";
  }
  // The configuration must be exactly what the warm VM applied; the dirty
  // ring's size is the old VMM's choice and is never replayed.
  kvm::x86::VmConfig c = state::x86::Decode(m.getVm().getX8664().getConfig());
  const kvm::x86::VmConfig& w = vm_config_;
  bool caps = c.enabled_caps.size() == w.enabled_caps.size();
  for (size_t i = 0; caps && i < c.enabled_caps.size(); ++i) {
    caps = c.enabled_caps[i].cap == w.enabled_caps[i].cap && c.enabled_caps[i].args == w.enabled_caps[i].args;
  }
  if (!caps || c.tss_addr != w.tss_addr || c.identity_map_addr != w.identity_map_addr || c.irqchip != w.irqchip ||
      c.pit != w.pit || c.pit_flags != w.pit_flags) {
    return "its VM configuration (capabilities, irqchip, PIT) differs from the warm VMs'";
  }
  return "";
}

// The VMM as the restore order (restore/restore.h) sees it.
class Vmm::Target final : public restore::RestoreTarget {
 public:
  Target(Vmm& vmm, const VmmOptions& options) : vmm_(vmm), options_(options) {}
  schema::Arch arch() const override { return schema::Arch::X8664; }
  unsigned max_vcpus() const override { return kMaxVcpus; }
  Result<restore::ArchRestorer*> CreateVm() override {
    VMSNAP_RETURN_IF_ERROR(vmm_.Init(options_));
    restorer_ = std::make_unique<restore::x86::X86Restorer>(*vmm_.vm_ops_);
    return restorer_.get();
  }
  Result<std::vector<kvm::GuestRegion>> CreateMemory(const std::vector<kvm::GuestRegion>& layout) override {
    VMSNAP_ASSIGN_OR_RETURN(vmm_.memory_, GuestMemory::CreateRegions(layout));
    return vmm_.memory_->views();
  }
  Status RegisterMemory() override { return vmm_.RegisterMemory(); }
  Status VmConfigured() override {
    vmm_.vm_config_ = restorer_->config();
    return vmm_.VmConfigured();
  }
  Status CreateVcpus(unsigned count) override {
    VMSNAP_RETURN_IF_ERROR(vmm_.CreateVcpus(static_cast<int>(count)));
    std::vector<kvm::x86::VcpuOps*> ops;
    for (auto& o : vmm_.vcpu_ops_) ops.push_back(o.get());
    restorer_->set_vcpus(std::move(ops));
    return Status::Ok();
  }

 private:
  Vmm& vmm_;
  const VmmOptions& options_;
  std::unique_ptr<restore::x86::X86Restorer> restorer_;
};

Result<std::unique_ptr<Vmm>> Vmm::Restore(const std::string& snapshot, const VmmOptions& options,
                                          restore::MemoryLoader* loader) {
  // Opened once: the loader and the dirty tracking's parent use this copy.
  VMSNAP_ASSIGN_OR_RETURN(SnapshotChain opened, restore::OpenSnapshot(snapshot));
  auto shared = std::make_shared<const SnapshotChain>(std::move(opened));
  std::unique_ptr<Vmm> vmm(new Vmm());
  {
    Target target(*vmm, options);
    VMSNAP_RETURN_IF_ERROR(restore::RestoreInto(shared, target, loader));
  }
  VMSNAP_RETURN_IF_ERROR(vmm->InheritLineage(shared.get(), false));
  // The restored memory is SNAPSHOT's: incremental snapshots build on it.
  if (vmm->dirty_) {
    schema::Manifest::Reader m = shared->leaf().manifest();
    capture::dirty::ParentInfo loaded;
    loaded.id = shared->leaf().id();
    loaded.path = snapshot;
    loaded.depth = m.hasParent() ? m.getParent().getDepth() : 0;
    vmm->dirty_->set_last_snapshot(std::move(loaded));
  }
  return vmm;
}

namespace {

// The restore order's VM configuration step for a warm VM: the
// configuration is already in place (WarmMismatch checked it is the
// snapshot's); every other step is the x86 restorer's.
class WarmRestorer final : public restore::ArchRestorer {
 public:
  explicit WarmRestorer(restore::x86::X86Restorer& inner) : inner_(inner) {}
  Status CheckHost(schema::Manifest::Reader m) override { return inner_.CheckHost(m); }
  Status RestoreVmConfig(schema::Manifest::Reader) override { return Status::Ok(); }
  Status CheckVcpus(schema::Manifest::Reader m) override { return inner_.CheckVcpus(m); }
  Status RestoreState(schema::Manifest::Reader m) override { return inner_.RestoreState(m); }

 private:
  restore::x86::X86Restorer& inner_;
};

// A prepared VM as the restore order sees it: everything already exists.
class WarmTarget final : public restore::RestoreTarget {
 public:
  WarmTarget(kvm::x86::RealVmOps& vm, std::vector<kvm::x86::VcpuOps*> vcpus, std::vector<kvm::GuestRegion> views,
             std::vector<kvm_cpuid_entry2> host_cpuid)
      : inner_(vm), outer_(inner_), vcpus_(std::move(vcpus)), views_(std::move(views)) {
    inner_.set_host_cpuid(std::move(host_cpuid));
  }
  schema::Arch arch() const override { return schema::Arch::X8664; }
  unsigned max_vcpus() const override { return static_cast<unsigned>(vcpus_.size()); }
  Result<restore::ArchRestorer*> CreateVm() override { return &outer_; }
  Result<std::vector<kvm::GuestRegion>> CreateMemory(const std::vector<kvm::GuestRegion>&) override {
    return views_;
  }
  Status RegisterMemory() override { return Status::Ok(); }
  Status CreateVcpus(unsigned count) override {
    if (count != vcpus_.size()) return Status::Internal("warm VM has another vCPU count");
    inner_.set_vcpus(vcpus_);
    return Status::Ok();
  }

 private:
  restore::x86::X86Restorer inner_;
  WarmRestorer outer_;
  std::vector<kvm::x86::VcpuOps*> vcpus_;
  std::vector<kvm::GuestRegion> views_;
};

}  // namespace

Status Vmm::RestoreWarm(std::shared_ptr<const SnapshotChain> chain, restore::MemoryLoader* loader) {
  std::string why = WarmMismatch(*chain);
  if (!why.empty()) return Status::InvalidArgument("snapshot " + chain->leaf().path() + " does not fit: " + why);
  std::vector<kvm::x86::VcpuOps*> ops;
  for (auto& o : vcpu_ops_) ops.push_back(o.get());
  WarmTarget target(*vm_ops_, std::move(ops), memory_->views(), warm_host_cpuid_);
  VMSNAP_RETURN_IF_ERROR(restore::RestoreInto(chain, target, loader));
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
    VMSNAP_RETURN_IF_ERROR(dirty_->Start());
    if (generation_changed) dirty_->tracker().MarkDirty(kGenerationIdAddr, generation_id_.size());
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
