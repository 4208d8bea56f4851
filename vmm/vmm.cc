// SPDX-License-Identifier: MIT
// The VMM's life cycle: creating the VM for a boot or a restore, and the
// main thread's loop (doorbells, control clients) while the vCPUs run.
// The vCPU threads live in vcpu_loop.cc, the devices in devices.cc, the
// control protocol in control.cc and snapshots in save.cc.
#include "vmm/vmm.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "restore/x86_64/x86_restore.h"
#include "vmm/boot.h"
#include "vmm/control.h"

namespace vmsnap::vmm {

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
  AddExitPort(ports_, [this](int status) { Stop(status, Status::Ok()); });
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

Result<int> Vmm::Run() {
  UniqueFd listen_fd;
  if (!options_.control_socket.empty()) {
    VMSNAP_ASSIGN_OR_RETURN(listen_fd, ListenControl(options_.control_socket));
  }
  // Memory as it is now is the base of the first incremental snapshot.
  if (dirty_) VMSNAP_RETURN_IF_ERROR(dirty_->Start());
  StartVcpus();
  for (;;) {
    pollfd fds[2] = {{event_fd_.get(), POLLIN, 0}, {listen_fd.get(), POLLIN, 0}};
    int n = ::poll(fds, listen_fd.valid() ? 2 : 1, -1);
    if (n < 0 && errno != EINTR) {
      Stop(std::nullopt, Status::FromErrno(errno, "poll"));
    }
    if (n > 0 && (fds[0].revents & POLLIN)) {
      uint64_t v;
      ssize_t r = ::read(event_fd_.get(), &v, sizeof v);
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
  JoinVcpus();
  if (listen_fd.valid()) ::unlink(options_.control_socket.c_str());
  serial_.Flush();
  if (!error_.ok()) return error_;
  return exit_status_.value_or(0);
}

}  // namespace vmsnap::vmm
