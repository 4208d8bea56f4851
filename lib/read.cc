// SPDX-License-Identifier: MIT
// The C API's errors, versions and read side: see include/vmsnap/vmsnap.h.
#include <cstring>
#include <new>

#include "base/arch.h"
#include "format/layout.h"
#include "lib/arch_state.h"
#include "lib/cxx.h"
#include "lib/internal.h"
#include "lib/x86_state.h"
#include "restore/restore.h"
#include "restore/x86_64/x86_restore.h"
#include "schemas/x86_64.capnp.h"

namespace vmsnap::capi {
namespace {

thread_local std::string last_error;

int CodeOf(Code c) {
  switch (c) {
    case Code::kOk: return VMSNAP_OK;
    case Code::kInvalidArgument: return VMSNAP_E_INVALID_ARGUMENT;
    case Code::kNotFound: return VMSNAP_E_NOT_FOUND;
    case Code::kIo: return VMSNAP_E_IO;
    case Code::kNoSpace: return VMSNAP_E_NO_SPACE;
    case Code::kCorruption: return VMSNAP_E_CORRUPT;
    case Code::kUnsupported: return VMSNAP_E_UNSUPPORTED;
    case Code::kWrongArch: return VMSNAP_E_WRONG_ARCH;
    case Code::kKvm: return VMSNAP_E_KVM;
    case Code::kGuest: return VMSNAP_E_INTERNAL;
    case Code::kInternal: return VMSNAP_E_INTERNAL;
  }
  return VMSNAP_E_INTERNAL;
}

}  // namespace

// Runs the restore mapping into in-memory state: the vCPU's state as KVM
// would be given it. `sregs2` picks which of the two sregs layouts is built.
Result<StateVcpuOps> X86VcpuState(schema::x86::Vcpu::Reader v, uint32_t index, bool sregs2) {
  kvm::x86::HostCaps caps;
  caps.sregs2 = sregs2;
  caps.xsave = true;
  caps.xsave_size = 0;  // the area as stored
  caps.xcrs = true;
  caps.debugregs = true;
  caps.vcpu_events = true;
  caps.exception_payload = true;
  caps.kvmclock_ctrl = false;
  caps.get_tsc_khz = false;
  caps.triple_fault_event = true;
  StateVcpuOps ops(static_cast<int>(index));
  VMSNAP_RETURN_IF_ERROR(restore::x86::RestoreVcpu(ops, v, caps));
  if (v.getTscKhz() != 0) ops.tsc_khz = v.getTscKhz();
  return ops;
}

int Fail(const Status& status) {
  last_error = status.message();
  return CodeOf(status.code());
}

int Ok() {
  last_error.clear();
  return VMSNAP_OK;
}

int Invalid(const std::string& message) { return Fail(Status::InvalidArgument(message)); }

vmsnap_snapshot* WrapChain(std::shared_ptr<const SnapshotChain> chain, std::string path) {
  auto* s = new vmsnap_snapshot;
  s->chain = std::move(chain);
  s->path = std::move(path);
  return s;
}

Status StatusOf(int rc) {
  if (rc == VMSNAP_OK) return Status::Ok();
  const std::string m = last_error;
  switch (rc) {
    case VMSNAP_E_INVALID_ARGUMENT: return Status::InvalidArgument(m);
    case VMSNAP_E_NOT_FOUND: return Status::NotFound(m);
    case VMSNAP_E_IO: return Status::Io(m);
    case VMSNAP_E_NO_SPACE: return Status::NoSpace(m);
    case VMSNAP_E_CORRUPT: return Status::Corruption(m);
    case VMSNAP_E_UNSUPPORTED: return Status::Unsupported(m);
    case VMSNAP_E_WRONG_ARCH: return Status::WrongArch(m);
    case VMSNAP_E_KVM: return Status::Kvm(m);
    default: return Status::Internal(m);
  }
}

int CopyOut(const void* data, size_t size, void* buf, size_t buf_size, size_t* size_out) {
  if (size_out) *size_out = size;
  if (!buf || buf_size < size) {
    last_error = "buffer of " + std::to_string(buf_size) + " bytes is too small: " + std::to_string(size) +
                 " needed";
    return VMSNAP_E_BUFFER_TOO_SMALL;
  }
  std::memcpy(buf, data, size);
  return Ok();
}

schema::Arch ToSchema(vmsnap_arch arch) {
  switch (arch) {
    case VMSNAP_ARCH_S390X: return schema::Arch::S390X;
    case VMSNAP_ARCH_PPC64: return schema::Arch::PPC64;
    case VMSNAP_ARCH_AARCH64: return schema::Arch::AARCH64;
    default: return schema::Arch::X8664;
  }
}

vmsnap_arch FromSchema(schema::Arch arch) {
  switch (arch) {
    case schema::Arch::S390X: return VMSNAP_ARCH_S390X;
    case schema::Arch::PPC64: return VMSNAP_ARCH_PPC64;
    case schema::Arch::AARCH64: return VMSNAP_ARCH_AARCH64;
    default: return VMSNAP_ARCH_X86_64;
  }
}

namespace {

schema::Manifest::Reader Leaf(const vmsnap_snapshot* s) { return s->chain->leaf().manifest(); }

int X86Vcpu(const vmsnap_snapshot* s, schema::x86::Vcpu::Reader v, uint32_t vcpu, vmsnap_state what, void* buf,
            size_t buf_size, size_t* size) {
  bool want_sregs2 = what == VMSNAP_X86_SREGS2;
  auto r = X86VcpuState(v, vcpu, want_sregs2);
  if (!r.ok()) return Fail(r.status().Context("snapshot " + s->path + ", vCPU " + std::to_string(vcpu)));
  StateVcpuOps& st = r.value();
  switch (what) {
    case VMSNAP_X86_MP_STATE: return Answer(s, st.mp, "MP_STATE", buf, buf_size, size);
    case VMSNAP_X86_REGS: return Answer(s, st.regs, "REGS", buf, buf_size, size);
    case VMSNAP_X86_SREGS: return Answer(s, st.sregs, "SREGS", buf, buf_size, size);
    case VMSNAP_X86_SREGS2: return Answer(s, st.sregs2, "SREGS2", buf, buf_size, size);
    case VMSNAP_X86_XSAVE:
      if (!st.xsave) return Missing(s, "XSAVE area");
      return CopyOut(st.xsave->data(), st.xsave->size(), buf, buf_size, size);
    case VMSNAP_X86_XCRS: return Answer(s, st.xcrs, "XCRS", buf, buf_size, size);
    case VMSNAP_X86_DEBUGREGS: return Answer(s, st.debugregs, "DEBUGREGS", buf, buf_size, size);
    case VMSNAP_X86_LAPIC: return Answer(s, st.lapic, "LAPIC", buf, buf_size, size);
    case VMSNAP_X86_MSRS: {
      std::vector<kvm_msr_entry> e;
      for (const auto& [index, value] : st.msrs) {
        kvm_msr_entry m{};
        m.index = index;
        m.data = value;
        e.push_back(m);
      }
      return CopyOut(e.data(), e.size() * sizeof(kvm_msr_entry), buf, buf_size, size);
    }
    case VMSNAP_X86_EVENTS: return Answer(s, st.events, "EVENTS", buf, buf_size, size);
    case VMSNAP_X86_CPUID:
      if (!st.cpuid) return Missing(s, "CPUID");
      return CopyOut(st.cpuid->data(), st.cpuid->size() * sizeof(kvm_cpuid_entry2), buf, buf_size, size);
    case VMSNAP_X86_TSC_KHZ: return Answer(s, st.tsc_khz, "TSC_KHZ", buf, buf_size, size);
    default:
      return Invalid("state " + std::to_string(static_cast<int>(what)) + " is not x86_64 per-vCPU state");
  }
}

}  // namespace
}  // namespace vmsnap::capi

using namespace vmsnap;
using namespace vmsnap::capi;

extern "C" {

const char* vmsnap_version(void) { return VMSNAP_LIBRARY_VERSION; }

void vmsnap_format_version(uint16_t* major, uint16_t* minor) {
  if (major) *major = layout::kMajor;
  if (minor) *minor = layout::kMinor;
}

const char* vmsnap_last_error(void) { return last_error.c_str(); }

const char* vmsnap_status_name(int status) {
  static const char* const names[] = {"OK",      "INVALID_ARGUMENT", "NOT_FOUND",  "IO",
                                      "NO_SPACE", "CORRUPT",         "UNSUPPORTED", "WRONG_ARCH",
                                      "KVM",     "BUFFER_TOO_SMALL", "INTERNAL"};
  if (status < 0 || status > VMSNAP_E_INTERNAL) return "UNKNOWN";
  return names[status];
}

const char* vmsnap_arch_name(vmsnap_arch arch) {
  switch (arch) {
    case VMSNAP_ARCH_X86_64: return "x86_64";
    case VMSNAP_ARCH_S390X: return "s390x";
    case VMSNAP_ARCH_PPC64: return "ppc64";
    case VMSNAP_ARCH_AARCH64: return "aarch64";
  }
  return "unknown";
}

int vmsnap_open(const char* path, uint32_t flags, vmsnap_snapshot** out) {
  VMSNAP_CHECK_ARG(path && out, "vmsnap_open: path and out must not be NULL");
  *out = nullptr;
  VMSNAP_GUARD_BEGIN
  std::shared_ptr<const SnapshotChain> chain;
  if (flags & VMSNAP_OPEN_NO_PARENTS) {
    auto r = SnapshotReader::Open(path);
    if (!r.ok()) return Fail(r.status());
    chain = std::make_shared<const SnapshotChain>(SnapshotChain::FromReader(std::move(r).value()));
  } else {
    auto c = SnapshotChain::Open(path);
    if (!c.ok()) return Fail(c.status());
    chain = std::make_shared<const SnapshotChain>(std::move(c).value());
  }
  *out = WrapChain(std::move(chain), path);
  return Ok();
  VMSNAP_GUARD_END
}

void vmsnap_close(vmsnap_snapshot* snap) { delete snap; }

int vmsnap_verify(const vmsnap_snapshot* snap, vmsnap_progress_fn progress, void* ctx) {
  VMSNAP_CHECK_ARG(snap, "vmsnap_verify: snapshot is NULL");
  VMSNAP_GUARD_BEGIN
  for (const auto& layer : snap->chain->layers()) {
    ProgressFn p;
    if (progress) p = [progress, ctx](uint64_t d, uint64_t t) { progress(d, t, ctx); };
    Status st = layer->VerifyAll(p);
    if (!st.ok()) return Fail(st);
  }
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_arch_of(const vmsnap_snapshot* snap, vmsnap_arch* arch) {
  VMSNAP_CHECK_ARG(snap && arch, "vmsnap_arch_of: NULL argument");
  VMSNAP_GUARD_BEGIN
  *arch = FromSchema(Leaf(snap).getArch());
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_file_version(const vmsnap_snapshot* snap, uint16_t* major, uint16_t* minor) {
  VMSNAP_CHECK_ARG(snap && major && minor, "vmsnap_file_version: NULL argument");
  *major = snap->chain->leaf().format_major();
  *minor = snap->chain->leaf().format_minor();
  return Ok();
}

int vmsnap_creator_of(const vmsnap_snapshot* snap, vmsnap_creator* out) {
  VMSNAP_CHECK_ARG(snap && out, "vmsnap_creator_of: NULL argument");
  VMSNAP_GUARD_BEGIN
  auto c = Leaf(snap).getCreated();
  out->tool_version = c.getToolVersion().cStr();
  out->host_kernel = c.getHostKernel().cStr();
  out->host_cpu = c.getHostCpu().cStr();
  out->host_name = c.getHostName().cStr();
  out->time_unix_ns = c.getTimeUnixNs();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_layer_count(const vmsnap_snapshot* snap, uint32_t* count) {
  VMSNAP_CHECK_ARG(snap && count, "vmsnap_layer_count: NULL argument");
  *count = static_cast<uint32_t>(snap->chain->layers().size());
  return Ok();
}

int vmsnap_snapshot_id(const vmsnap_snapshot* snap, uint8_t id[16]) {
  VMSNAP_CHECK_ARG(snap && id, "vmsnap_snapshot_id: NULL argument");
  auto v = snap->chain->leaf().id();
  std::memcpy(id, v.data(), 16);
  return Ok();
}

int vmsnap_vcpu_count(const vmsnap_snapshot* snap, uint32_t* count) {
  VMSNAP_CHECK_ARG(snap && count, "vmsnap_vcpu_count: NULL argument");
  VMSNAP_GUARD_BEGIN
  *count = Leaf(snap).getVcpus().size();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vcpu_state(const vmsnap_snapshot* snap, uint32_t vcpu, vmsnap_state what, void* buf, size_t buf_size,
                      size_t* size) {
  VMSNAP_CHECK_ARG(snap, "vmsnap_vcpu_state: snapshot is NULL");
  VMSNAP_GUARD_BEGIN
  auto vcpus = Leaf(snap).getVcpus();
  if (vcpu >= vcpus.size()) {
    return Fail(Status::NotFound("snapshot " + snap->path + " has " + std::to_string(vcpus.size()) +
                                 " vCPUs, no vCPU " + std::to_string(vcpu)));
  }
  auto v = vcpus[vcpu];
  if (v.isX8664()) return X86Vcpu(snap, v.getX8664(), vcpu, what, buf, buf_size, size);
  if (v.isS390x()) return ReadS390Vcpu(snap, vcpu, what, buf, buf_size, size);
  if (v.isPpc64()) return ReadPpc64Vcpu(snap, vcpu, what, buf, buf_size, size);
  if (v.isAarch64()) return ReadArm64Vcpu(snap, vcpu, what, buf, buf_size, size);
  return Fail(Status::Unsupported("snapshot " + snap->path + ": this library version reads no " +
                                  ArchName(Leaf(snap).getArch()) + " vCPU state in kernel layouts"));
  VMSNAP_GUARD_END
}

int vmsnap_vm_state(const vmsnap_snapshot* snap, vmsnap_state what, void* buf, size_t buf_size, size_t* size) {
  VMSNAP_CHECK_ARG(snap, "vmsnap_vm_state: snapshot is NULL");
  VMSNAP_GUARD_BEGIN
  auto vm = Leaf(snap).getVm();
  if (vm.isS390x()) return ReadS390Vm(snap, what, buf, buf_size, size);
  if (vm.isPpc64()) return ReadPpc64Vm(snap, what, buf, buf_size, size);
  if (vm.isAarch64()) return ReadArm64Vm(snap, what, buf, buf_size, size);
  if (!vm.isX8664()) return Missing(snap, "VM state");
  auto x = vm.getX8664();
  if (what == VMSNAP_X86_VM_CONFIG) {
    vmsnap_x86_vm_config c{};
    auto cfg = x.getConfig();
    c.tss_addr = cfg.getTssAddr();
    c.identity_map_addr = cfg.getIdentityMapAddr();
    c.irqchip = cfg.getIrqchip();
    c.pit = cfg.getPit();
    c.pit_flags = cfg.getPitFlags();
    for (auto cap : cfg.getEnabledCaps()) {
      if (cap.getCap() == KVM_CAP_EXCEPTION_PAYLOAD) c.exception_payload = 1;
    }
    return CopyOut(&c, sizeof c, buf, buf_size, size);
  }
  if (what == VMSNAP_X86_CLOCK) {
    if (!x.hasClock()) return Missing(snap, "CLOCK");
    kvm_clock_data c{};
    c.clock = x.getClock().getClock();
    c.flags = x.getClock().getFlags();
    c.realtime = x.getClock().getRealtime();
    c.host_tsc = x.getClock().getHostTsc();
    return CopyOut(&c, sizeof c, buf, buf_size, size);
  }
  StateVmOps ops;
  Status st = restore::x86::RestoreVm(ops, x);
  if (!st.ok()) return Fail(st.Context("snapshot " + snap->path));
  switch (what) {
    case VMSNAP_X86_PIC_MASTER:
    case VMSNAP_X86_PIC_SLAVE:
    case VMSNAP_X86_IOAPIC: {
      uint32_t id = what == VMSNAP_X86_PIC_MASTER ? KVM_IRQCHIP_PIC_MASTER
                    : what == VMSNAP_X86_PIC_SLAVE ? KVM_IRQCHIP_PIC_SLAVE
                                                   : KVM_IRQCHIP_IOAPIC;
      auto it = ops.irqchips.find(id);
      if (it == ops.irqchips.end()) return Missing(snap, "in-kernel irqchip state");
      return CopyOut(&it->second, sizeof(kvm_irqchip), buf, buf_size, size);
    }
    case VMSNAP_X86_PIT: return Answer(snap, ops.pit, "PIT", buf, buf_size, size);
    default:
      return Invalid("state " + std::to_string(static_cast<int>(what)) + " is not x86_64 VM state");
  }
  VMSNAP_GUARD_END
}

int vmsnap_region_count(const vmsnap_snapshot* snap, uint32_t* count) {
  VMSNAP_CHECK_ARG(snap && count, "vmsnap_region_count: NULL argument");
  VMSNAP_GUARD_BEGIN
  *count = Leaf(snap).getMemory().getRegions().size();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_region_at(const vmsnap_snapshot* snap, uint32_t index, vmsnap_region* region) {
  VMSNAP_CHECK_ARG(snap && region, "vmsnap_region_at: NULL argument");
  VMSNAP_GUARD_BEGIN
  auto regions = Leaf(snap).getMemory().getRegions();
  if (index >= regions.size()) {
    return Fail(Status::NotFound("snapshot " + snap->path + " has " + std::to_string(regions.size()) +
                                 " memory regions, no region " + std::to_string(index)));
  }
  auto r = regions[index];
  region->slot = r.getSlot();
  region->flags = r.getFlags();
  region->guest_phys_addr = r.getGuestPhysAddr();
  region->size = r.getSize();
  region->host = nullptr;
  region->name = r.getName().cStr();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_page_size(const vmsnap_snapshot* snap, uint32_t* page_size) {
  VMSNAP_CHECK_ARG(snap && page_size, "vmsnap_page_size: NULL argument");
  *page_size = snap->chain->leaf().page_size();
  return Ok();
}

int vmsnap_read_memory(const vmsnap_snapshot* snap, uint64_t gpa, void* out, uint64_t len) {
  VMSNAP_CHECK_ARG(snap && (out || len == 0), "vmsnap_read_memory: NULL argument");
  VMSNAP_GUARD_BEGIN
  Status st = snap->chain->ReadMemory(gpa, len, static_cast<uint8_t*>(out));
  if (!st.ok()) return Fail(st);
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_for_each_page(const vmsnap_snapshot* snap, vmsnap_page_fn fn, void* ctx) {
  VMSNAP_CHECK_ARG(snap && fn, "vmsnap_for_each_page: NULL argument");
  VMSNAP_GUARD_BEGIN
  const uint64_t page = snap->chain->leaf().page_size();
  for (auto r : Leaf(snap).getMemory().getRegions()) {
    for (uint64_t gpa = r.getGuestPhysAddr(); gpa < r.getGuestPhysAddr() + r.getSize(); gpa += page) {
      if (!snap->chain->Locate(gpa).stored) continue;
      if (fn(gpa, ctx) != 0) return Ok();
    }
  }
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_device_count(const vmsnap_snapshot* snap, uint32_t* count) {
  VMSNAP_CHECK_ARG(snap && count, "vmsnap_device_count: NULL argument");
  VMSNAP_GUARD_BEGIN
  *count = Leaf(snap).getDevices().size();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_device_at(const vmsnap_snapshot* snap, uint32_t index, const char** name, uint32_t* version,
                     const void** data, size_t* size) {
  VMSNAP_CHECK_ARG(snap, "vmsnap_device_at: snapshot is NULL");
  VMSNAP_GUARD_BEGIN
  auto devs = Leaf(snap).getDevices();
  if (index >= devs.size()) {
    return Fail(Status::NotFound("snapshot " + snap->path + " has " + std::to_string(devs.size()) +
                                 " device records, no record " + std::to_string(index)));
  }
  auto d = devs[index];
  if (name) *name = d.getName().cStr();
  if (version) *version = d.getVersion();
  if (data) *data = d.getData().begin();
  if (size) *size = d.getData().size();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_device_find(const vmsnap_snapshot* snap, const char* name, uint32_t* version, const void** data,
                       size_t* size) {
  VMSNAP_CHECK_ARG(snap && name, "vmsnap_device_find: NULL argument");
  VMSNAP_GUARD_BEGIN
  auto devs = Leaf(snap).getDevices();
  for (unsigned i = 0; i < devs.size(); ++i) {
    if (devs[i].getName() == kj::StringPtr(name)) return vmsnap_device_at(snap, i, nullptr, version, data, size);
  }
  return Fail(Status::NotFound("snapshot " + snap->path + " has no device record named \"" + name + "\""));
  VMSNAP_GUARD_END
}

}  // extern "C"
