// SPDX-License-Identifier: MIT
// The C API's state of s390x, ppc64 and aarch64 vCPUs and VMs, held in memory
// in the kernel's structs behind the kvm::s390 / kvm::ppc / kvm::arm64
// interfaces that the real ioctls implement. As for x86 (x86_state.h), a
// snapshot is written by running each architecture's capture code over these
// and read by running its restore code into them, so the mapping between
// kernel structs and manifest fields exists once, in capture/ and restore/.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "include/vmsnap/vmsnap.h"
#include "lib/internal.h"
#include "schemas/manifest.capnp.h"

struct kvm_one_reg;

struct vmsnap_snapshot;

namespace vmsnap::capi {

// One record of the VMSNAP_ONE_REGS layout.
struct OneReg {
  uint64_t id;
  std::vector<uint8_t> value;
};
// Bytes of a register's value, from the size its id encodes (KVM_REG_SIZE).
size_t OneRegBytes(uint64_t id);
// Splits a VMSNAP_ONE_REGS buffer; the error names the record and offset.
Result<std::vector<OneReg>> ParseOneRegs(const void* buf, size_t size);
// VMSNAP_ONE_REGS into `slot` (a C API status), and out of a vCPU's list.
int StoreOneRegs(std::vector<OneReg>& slot, const void* buf, size_t size);
int AnswerOneRegs(const std::vector<OneReg>& regs, void* buf, size_t buf_size, size_t* size);
std::vector<uint8_t> EncodeOneRegs(const std::vector<OneReg>& regs);

// What the in-memory vCPUs of every architecture hold besides their own
// structs (each also derives from its architecture's kvm::*::Vcpu): the
// VMSNAP_ONE_REGS list, the ids the capture code asked for, and the message
// naming the first state a read wanted that the caller never gave.
class MemVcpuState {
 public:
  std::vector<OneReg> one;      // in the order given (write) or set (read)
  std::vector<uint64_t> asked;  // ids the capture code read
  std::string missing;

 protected:
  explicit MemVcpuState(uint32_t index) : index_(index) {}
  // KVM_GET_ONE_REG from `one`. A register not there: -ENOENT, and
  // `missing` names it unless `absent_is_normal` (the architecture's
  // capture skips registers a CPU does not have).
  int ReadOneReg(const kvm_one_reg& r, bool absent_is_normal = false);
  // KVM_SET_ONE_REG into `one`: replaces the register's value or appends it.
  int WriteOneReg(const kvm_one_reg& r);
  // -ENOENT, with `missing` naming the state (a VMSNAP_* name).
  int Absent(const char* name);
  template <typename T>
  int Get(const std::optional<T>& v, T* out, const char* name) {
    if (!v) return Absent(name);
    *out = *v;
    return 0;
  }

  uint32_t index_;
};

// A guest memory range of the snapshot being written (gpa and size in bytes).
struct MemRange {
  uint64_t gpa;
  uint64_t size;
};

// The state a writer of a non-x86 architecture collects until commit.
class ArchWriter {
 public:
  virtual ~ArchWriter() = default;
  virtual uint32_t page_size() const = 0;
  virtual int SetVcpu(uint32_t vcpu, vmsnap_state what, const void* buf, size_t size) = 0;
  virtual int SetVm(vmsnap_state what, const void* buf, size_t size) = 0;
  virtual size_t vcpu_count() const = 0;
  // Fills arch, vcpus and vm of the manifest through the capture code.
  virtual Status Capture(const std::vector<MemRange>& memory, schema::Manifest::Builder m) = 0;
};

std::unique_ptr<ArchWriter> NewS390Writer();
std::unique_ptr<ArchWriter> NewPpc64Writer();
std::unique_ptr<ArchWriter> NewArm64Writer();

// One piece of state of a snapshot, as the restore code would give it to
// KVM, into the caller's buffer (CopyOut's contract). `vcpu` is the index.
int ReadS390Vcpu(const vmsnap_snapshot* s, uint32_t vcpu, vmsnap_state what, void* buf, size_t buf_size,
                 size_t* size);
int ReadS390Vm(const vmsnap_snapshot* s, vmsnap_state what, void* buf, size_t buf_size, size_t* size);
int ReadPpc64Vcpu(const vmsnap_snapshot* s, uint32_t vcpu, vmsnap_state what, void* buf, size_t buf_size,
                  size_t* size);
int ReadPpc64Vm(const vmsnap_snapshot* s, vmsnap_state what, void* buf, size_t buf_size, size_t* size);
int ReadArm64Vcpu(const vmsnap_snapshot* s, uint32_t vcpu, vmsnap_state what, void* buf, size_t buf_size,
                  size_t* size);
int ReadArm64Vm(const vmsnap_snapshot* s, vmsnap_state what, void* buf, size_t buf_size, size_t* size);

// Shared by the per-architecture files and read.cc (x86).
int Missing(const vmsnap_snapshot* s, const std::string& what);
// A piece of a snapshot's state into the caller's buffer (CopyOut), or
// Missing naming it.
template <typename T>
int Answer(const vmsnap_snapshot* s, const std::optional<T>& v, const char* name, void* buf, size_t buf_size,
           size_t* size) {
  if (!v) return Missing(s, name);
  return CopyOut(&*v, sizeof(T), buf, buf_size, size);
}
int NotStateOf(vmsnap_state what, const char* kind);
schema::Manifest::Reader LeafManifest(const vmsnap_snapshot* s);
const std::string& SnapshotPath(const vmsnap_snapshot* s);
std::string IdHex(uint64_t id);

int Invalid(const std::string& message);
int Ok();

// A writer's vCPU INDEX, created (with the ones below it) on first use.
template <typename V>
V& VcpuAt(std::vector<std::unique_ptr<V>>& vcpus, uint32_t index) {
  while (vcpus.size() <= index) vcpus.push_back(std::make_unique<V>(static_cast<uint32_t>(vcpus.size())));
  return *vcpus[index];
}

// Copies exactly sizeof(T) bytes from the caller, or fails naming `name`.
template <typename T>
int StoreExact(std::optional<T>& slot, const void* buf, size_t size, const char* name) {
  if (size != sizeof(T)) {
    return Invalid(std::string(name) + ": expected " + std::to_string(sizeof(T)) + " bytes, got " +
                   std::to_string(size));
  }
  T v;
  std::memcpy(&v, buf, sizeof v);
  slot = v;
  return Ok();
}

// The registers a caller gave in VMSNAP_ONE_REGS that the capture did not
// ask for (`asked`) would be dropped silently: InvalidArgument naming the
// first, for the `arch` ("a ppc64") snapshot being written.
Status CheckOneRegsStored(const std::vector<OneReg>& given, const std::vector<uint64_t>& asked, size_t vcpu,
                          const char* arch);

}  // namespace vmsnap::capi
