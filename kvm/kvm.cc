// SPDX-License-Identifier: MIT
// Generic KVM handles: see kvm.h.
#include "kvm/kvm.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace vmsnap::kvm {

std::string DevicePath() {
  const char* env = std::getenv(kDeviceEnvVar);
  return env && *env ? std::string(env) : std::string(kDefaultDevice);
}

Result<int> Ioctl(int fd, unsigned long request, void* arg, const char* name,
                  const std::string& where) {
  for (;;) {
    int r = ::ioctl(fd, request, arg);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    int err = errno;
    return Status::Kvm(std::string(name) + where + ": " + std::strerror(err));
  }
}

Result<std::unique_ptr<System>> System::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return Status(Code::kUnsupported,
                  "cannot open KVM device " + path + ": " + std::strerror(err));
  }
  UniqueFd owned(fd);
  VMSNAP_ASSIGN_OR_RETURN(int version, Ioctl(fd, KVM_GET_API_VERSION, nullptr, "KVM_GET_API_VERSION"));
  if (version != KVM_API_VERSION) {
    return Status::Unsupported(path + ": KVM API version " + std::to_string(version) +
                               ", expected " + std::to_string(KVM_API_VERSION));
  }
  return std::unique_ptr<System>(new System(std::move(owned), path));
}

Result<int> System::CheckExtension(long cap) const {
  return Ioctl(fd(), KVM_CHECK_EXTENSION, reinterpret_cast<void*>(cap), "KVM_CHECK_EXTENSION");
}

Result<size_t> System::VcpuMmapSize() const {
  VMSNAP_ASSIGN_OR_RETURN(int size, Ioctl(fd(), KVM_GET_VCPU_MMAP_SIZE, nullptr, "KVM_GET_VCPU_MMAP_SIZE"));
  return static_cast<size_t>(size);
}

Result<std::unique_ptr<Vm>> System::CreateVm() {
  VMSNAP_ASSIGN_OR_RETURN(int vmfd, Ioctl(fd(), KVM_CREATE_VM, nullptr, "KVM_CREATE_VM"));
  return std::unique_ptr<Vm>(new Vm(this, UniqueFd(vmfd)));
}

Result<int> Vm::CheckExtension(long cap) const {
  return Ioctl(fd(), KVM_CHECK_EXTENSION, reinterpret_cast<void*>(cap), "KVM_CHECK_EXTENSION (VM)");
}

Status Vm::SetUserMemoryRegion(const MemorySlot& slot) {
  kvm_userspace_memory_region r{};
  r.slot = slot.slot;
  r.flags = slot.flags;
  r.guest_phys_addr = slot.guest_phys_addr;
  r.memory_size = slot.size;
  r.userspace_addr = slot.userspace_addr;
  return Ioctl(fd(), KVM_SET_USER_MEMORY_REGION, &r, "KVM_SET_USER_MEMORY_REGION",
               " (slot " + std::to_string(slot.slot) + ")")
      .status();
}

Status Vm::EnableCap(uint32_t cap, std::span<const uint64_t> args) {
  kvm_enable_cap c{};
  c.cap = cap;
  if (args.size() > 4) return Status::InvalidArgument("KVM_ENABLE_CAP: more than 4 args");
  for (size_t i = 0; i < args.size(); ++i) c.args[i] = args[i];
  return Ioctl(fd(), KVM_ENABLE_CAP, &c, "KVM_ENABLE_CAP", " (cap " + std::to_string(cap) + ")")
      .status();
}

Result<std::unique_ptr<Vcpu>> Vm::CreateVcpu(int index) {
  std::string where = " on vCPU " + std::to_string(index);
  VMSNAP_ASSIGN_OR_RETURN(size_t run_size, system_->VcpuMmapSize());
  VMSNAP_ASSIGN_OR_RETURN(int vfd, Ioctl(fd(), KVM_CREATE_VCPU, reinterpret_cast<void*>(static_cast<long>(index)),
                                         "KVM_CREATE_VCPU", where));
  UniqueFd owned(vfd);
  auto run = Mapping::Map(run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vfd, 0, "mmap of kvm_run" + where);
  if (!run.ok()) return Status(Code::kKvm, run.status().message());
  return std::unique_ptr<Vcpu>(new Vcpu(index, std::move(owned), std::move(run).value()));
}

std::string Vcpu::where() const { return " on vCPU " + std::to_string(index_); }

Result<Vcpu::RunResult> Vcpu::Run() {
  int r = ::ioctl(fd(), KVM_RUN, nullptr);
  if (r >= 0) return RunResult::kExit;
  if (errno == EINTR) return RunResult::kInterrupted;
  int err = errno;
  return Status::Kvm("KVM_RUN" + where() + ": " + std::strerror(err));
}

}  // namespace vmsnap::kvm
