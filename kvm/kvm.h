// SPDX-License-Identifier: MIT
// Generic KVM handles: the system (/dev/kvm), VM and vCPU fds, the mmapped vCPU
// run area, memory slots and capability checks. The only place (with
// kvm/<arch>/) that calls ioctl(); every call returns an error value naming
// the ioctl and, for vCPU calls, the vCPU.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "base/fd.h"
#include "base/mapping.h"
#include "base/status.h"

namespace vmsnap::kvm {

inline constexpr const char kDefaultDevice[] = "/dev/kvm";
// For testing only: when set, the VMM opens this path instead of /dev/kvm
// (a nonexistent path simulates a host without KVM). Documented in
// docs/guest-abi.md.
inline constexpr const char kDeviceEnvVar[] = "VMSNAP_KVM_DEVICE";
// /dev/kvm, or the path in $VMSNAP_KVM_DEVICE.
std::string DevicePath();

// Raw ioctl on `fd`, retried on EINTR. Returns the ioctl's non-negative result
// or an error "NAME<where>: strerror".
Result<int> Ioctl(int fd, unsigned long request, void* arg, const char* name,
                  const std::string& where = "");

// One KVM memory slot as KVM_SET_USER_MEMORY_REGION takes it.
struct MemorySlot {
  uint32_t slot = 0;   // as_id << 16 | id
  uint32_t flags = 0;  // KVM_MEM_*
  uint64_t guest_phys_addr = 0;
  uint64_t size = 0;
  uint64_t userspace_addr = 0;
};

class Vm;
class Vcpu;

class System {
 public:
  // Opens the KVM device and checks the API version is 12.
  static Result<std::unique_ptr<System>> Open(const std::string& path = DevicePath());

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  // KVM_CHECK_EXTENSION on the system fd: 0 when absent, else the cap's value.
  Result<int> CheckExtension(long cap) const;
  Result<size_t> VcpuMmapSize() const;
  // KVM_CREATE_VM with the default machine type.
  Result<std::unique_ptr<Vm>> CreateVm();

 private:
  System(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

class Vm {
 public:
  int fd() const { return fd_.get(); }
  System& system() const { return *system_; }
  // KVM_CHECK_EXTENSION on the VM fd (some answers are per VM).
  Result<int> CheckExtension(long cap) const;
  Status SetUserMemoryRegion(const MemorySlot& slot);
  // KVM_ENABLE_CAP on the VM; args up to 4.
  Status EnableCap(uint32_t cap, std::span<const uint64_t> args);
  // KVM_CREATE_VCPU with vCPU id `index`, and maps its run area.
  Result<std::unique_ptr<Vcpu>> CreateVcpu(int index);

 private:
  friend class System;
  Vm(System* system, UniqueFd fd) : system_(system), fd_(std::move(fd)) {}
  System* system_;  // not owned; outlives the VM
  UniqueFd fd_;
};

class Vcpu {
 public:
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  int index() const { return index_; }
  int fd() const { return fd_.get(); }
  // The shared run area (exit reason, I/O data, immediate_exit).
  kvm_run* run() const { return reinterpret_cast<kvm_run*>(run_.data()); }
  // " on vCPU N", for error messages.
  std::string where() const;

  enum class RunResult { kExit, kInterrupted };
  // KVM_RUN once. kInterrupted: a signal or immediate_exit stopped it (EINTR).
  Result<RunResult> Run();

 private:
  friend class Vm;
  Vcpu(int index, UniqueFd fd, Mapping run) : index_(index), fd_(std::move(fd)), run_(std::move(run)) {}
  int index_;
  UniqueFd fd_;  // declared before run_: the mapping goes first
  Mapping run_;
};

}  // namespace vmsnap::kvm

namespace vmsnap::kvm {

// A view of one guest memory region the VMM owns, as capture and restore see
// it: the slot KVM knows it by and the host mapping that backs it.
struct GuestRegion {
  uint32_t slot = 0;
  uint32_t flags = 0;  // KVM_MEM_*
  uint64_t gpa = 0;
  uint64_t size = 0;
  uint8_t* host = nullptr;  // not owned
  std::string name;
};

}  // namespace vmsnap::kvm
