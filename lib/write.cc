// SPDX-License-Identifier: MIT
// The C API's write side: see include/vmsnap/vmsnap.h. vCPU and VM state is
// collected in the kernel's structs and turned into manifest fields at
// commit by the same capture code that reads a live VM.
#include <cstring>

#include "capture/capture.h"
#include "capture/dirty/incremental.h"
#include "capture/x86_64/x86_capture.h"
#include "format/compression_spec.h"
#include "format/layout.h"
#include "lib/internal.h"
#include "lib/writer.h"

using namespace vmsnap;
using namespace vmsnap::capi;

namespace {

int CheckUsable(vmsnap_writer* w, const char* call) {
  if (!w) return Invalid(std::string(call) + ": writer is NULL");
  if (w->finished) return Invalid(std::string(call) + ": the writer was committed or failed; only vmsnap_writer_free may follow");
  return VMSNAP_OK;
}

std::string RegionName(const vmsnap_region& r) {
  if (r.name && *r.name) return r.name;
  return "slot " + std::to_string(r.slot);
}

}  // namespace

namespace vmsnap::capi {

int WriterAddRegion(vmsnap_writer* w, const vmsnap_region* region, const uint8_t* dirty) {
  if (int rc = CheckUsable(w, "vmsnap_writer_add_region")) return rc;
  if (!region || !region->host) return Invalid("vmsnap_writer_add_region: region and region->host must be set");
  const uint64_t page = w->page_size;
  const std::string name = RegionName(*region);
  if (region->guest_phys_addr % page || region->size % page || region->size == 0) {
    return Invalid("memory region " + name + " (" + Hex(region->guest_phys_addr) + ", " +
                   std::to_string(region->size) + " bytes) is not page-aligned");
  }
  if (region->guest_phys_addr < w->memory_end) {
    return Invalid("memory region " + name + " at " + Hex(region->guest_phys_addr) +
                   " overlaps or precedes the previous region (ending at " + Hex(w->memory_end) +
                   "): add regions in ascending guest-physical order");
  }
  if (dirty && !w->parent) {
    return Invalid("vmsnap_writer_add_region_pages: memory region " + name +
                   " given by dirty pages, but no parent was set (vmsnap_writer_set_parent)");
  }
  const auto* host = static_cast<const uint8_t*>(region->host);
  Status st = dirty ? w->writer->AddPages(region->guest_phys_addr, host, region->size, dirty)
                    : w->writer->AddMemory(region->guest_phys_addr, host, region->size);
  if (!st.ok()) {
    w->finished = true;
    return Fail(st.Context("memory region " + name));
  }
  w->memory_end = region->guest_phys_addr + region->size;
  w->regions.push_back({region->slot, region->flags, region->guest_phys_addr, region->size, name});
  return Ok();
}

}  // namespace vmsnap::capi

extern "C" {

int vmsnap_writer_create(const char* path, vmsnap_arch arch, const vmsnap_write_options* options,
                         vmsnap_writer** out) {
  VMSNAP_CHECK_ARG(path && out, "vmsnap_writer_create: path and out must not be NULL");
  *out = nullptr;
  VMSNAP_GUARD_BEGIN
  std::unique_ptr<ArchWriter> other;
  switch (arch) {
    case VMSNAP_ARCH_X86_64: break;
    case VMSNAP_ARCH_S390X: other = NewS390Writer(); break;
    case VMSNAP_ARCH_PPC64: other = NewPpc64Writer(); break;
    case VMSNAP_ARCH_AARCH64: other = NewArm64Writer(); break;
    default:
      return Invalid("vmsnap_writer_create: unknown architecture " + std::to_string(static_cast<int>(arch)));
  }
  vmsnap_write_options o{};
  if (options) {
    if (options->struct_size < sizeof(uint32_t) || options->struct_size > sizeof o) {
      return Invalid("vmsnap_writer_create: options->struct_size is " + std::to_string(options->struct_size) +
                     "; set it to sizeof(vmsnap_write_options)");
    }
    std::memcpy(&o, options, options->struct_size);
  }
  auto w = std::make_unique<vmsnap_writer>();
  w->path = path;
  w->arch = arch;
  if (other) w->page_size = other->page_size();
  w->other = std::move(other);
  CompressionSpec spec;
  if (o.compression) {
    auto parsed = ParseCompressionSpec(o.compression);
    if (!parsed.ok()) return Fail(parsed.status().Context("vmsnap_writer_create: compression"));
    spec = parsed.value();
  }
  w->compression = ToString(spec);
  w->tool_version = o.tool_version ? o.tool_version : std::string("libvmsnap ") + vmsnap_version();
  WriterOptions wo;
  Apply(spec, wo);
  wo.page_size = w->page_size;
  // The first file-format minor that holds aarch64 state.
  if (arch == VMSNAP_ARCH_AARCH64) wo.format_minor = layout::kMinorAarch64;
  wo.threads = o.threads;
  wo.progress_total = o.progress_total;
  if (o.progress) {
    vmsnap_progress_fn fn = o.progress;
    void* ctx = o.progress_ctx;
    wo.progress = [fn, ctx](uint64_t done, uint64_t total) { fn(done, total, ctx); };
  }
  auto created = SnapshotWriter::Create(path, wo);
  if (!created.ok()) return Fail(created.status());
  w->writer = std::move(created).value();
  *out = w.release();
  return Ok();
  VMSNAP_GUARD_END
}

void vmsnap_writer_free(vmsnap_writer* w) { delete w; }

int vmsnap_writer_set_vcpu_state(vmsnap_writer* w, uint32_t vcpu, vmsnap_state what, const void* buf, size_t size) {
  if (int rc = CheckUsable(w, "vmsnap_writer_set_vcpu_state")) return rc;
  VMSNAP_CHECK_ARG(buf || size == 0, "vmsnap_writer_set_vcpu_state: buf is NULL");
  VMSNAP_CHECK_ARG(vcpu < 4096, "vmsnap_writer_set_vcpu_state: vCPU index " + std::to_string(vcpu) + " out of range");
  VMSNAP_GUARD_BEGIN
  if (w->other) return w->other->SetVcpu(vcpu, what, buf, size);
  while (w->vcpus.size() <= vcpu) {
    w->vcpus.push_back(std::make_unique<StateVcpuOps>(static_cast<int>(w->vcpus.size())));
  }
  StateVcpuOps& v = *w->vcpus[vcpu];
  switch (what) {
    case VMSNAP_X86_MP_STATE: return StoreExact(v.mp, buf, size, "VMSNAP_X86_MP_STATE");
    case VMSNAP_X86_REGS: return StoreExact(v.regs, buf, size, "VMSNAP_X86_REGS");
    case VMSNAP_X86_SREGS: return StoreExact(v.sregs, buf, size, "VMSNAP_X86_SREGS");
    case VMSNAP_X86_SREGS2: return StoreExact(v.sregs2, buf, size, "VMSNAP_X86_SREGS2");
    case VMSNAP_X86_XSAVE:
      if (size < 512) return Invalid("VMSNAP_X86_XSAVE: an XSAVE area is at least 512 bytes, got " + std::to_string(size));
      v.xsave = std::vector<uint8_t>(static_cast<const uint8_t*>(buf), static_cast<const uint8_t*>(buf) + size);
      return Ok();
    case VMSNAP_X86_XCRS: return StoreExact(v.xcrs, buf, size, "VMSNAP_X86_XCRS");
    case VMSNAP_X86_DEBUGREGS: return StoreExact(v.debugregs, buf, size, "VMSNAP_X86_DEBUGREGS");
    case VMSNAP_X86_LAPIC: return StoreExact(v.lapic, buf, size, "VMSNAP_X86_LAPIC");
    case VMSNAP_X86_MSRS: {
      if (size % sizeof(kvm_msr_entry)) {
        return Invalid("VMSNAP_X86_MSRS: size " + std::to_string(size) + " is not a multiple of 16");
      }
      std::vector<kvm_msr_entry> e(size / sizeof(kvm_msr_entry));
      std::memcpy(e.data(), buf, size);
      v.msrs.clear();
      for (const auto& m : e) v.msrs[m.index] = m.data;
      return Ok();
    }
    case VMSNAP_X86_EVENTS: return StoreExact(v.events, buf, size, "VMSNAP_X86_EVENTS");
    case VMSNAP_X86_CPUID: {
      if (size % sizeof(kvm_cpuid_entry2)) {
        return Invalid("VMSNAP_X86_CPUID: size " + std::to_string(size) + " is not a multiple of 40");
      }
      std::vector<kvm_cpuid_entry2> e(size / sizeof(kvm_cpuid_entry2));
      std::memcpy(e.data(), buf, size);
      v.cpuid = std::move(e);
      return Ok();
    }
    case VMSNAP_X86_TSC_KHZ: return StoreExact(v.tsc_khz, buf, size, "VMSNAP_X86_TSC_KHZ");
    default:
      return Invalid("vmsnap_writer_set_vcpu_state: " + std::to_string(static_cast<int>(what)) +
                     " is not x86_64 per-vCPU state");
  }
  VMSNAP_GUARD_END
}

int vmsnap_writer_set_vm_state(vmsnap_writer* w, vmsnap_state what, const void* buf, size_t size) {
  if (int rc = CheckUsable(w, "vmsnap_writer_set_vm_state")) return rc;
  VMSNAP_CHECK_ARG(buf || size == 0, "vmsnap_writer_set_vm_state: buf is NULL");
  VMSNAP_GUARD_BEGIN
  if (w->other) return w->other->SetVm(what, buf, size);
  VMSNAP_CHECK_ARG(buf, "vmsnap_writer_set_vm_state: buf is NULL");
  switch (what) {
    case VMSNAP_X86_VM_CONFIG: {
      std::optional<vmsnap_x86_vm_config> c;
      if (int rc = StoreExact(c, buf, size, "VMSNAP_X86_VM_CONFIG")) return rc;
      w->config = ConfigFromC(*c);
      return Ok();
    }
    case VMSNAP_X86_PIC_MASTER:
    case VMSNAP_X86_PIC_SLAVE:
    case VMSNAP_X86_IOAPIC: {
      std::optional<kvm_irqchip> chip;
      if (int rc = StoreExact(chip, buf, size, "irqchip state (struct kvm_irqchip)")) return rc;
      chip->chip_id = what == VMSNAP_X86_PIC_MASTER ? KVM_IRQCHIP_PIC_MASTER
                      : what == VMSNAP_X86_PIC_SLAVE ? KVM_IRQCHIP_PIC_SLAVE
                                                     : KVM_IRQCHIP_IOAPIC;
      w->irqchips[chip->chip_id] = *chip;
      return Ok();
    }
    case VMSNAP_X86_PIT: return StoreExact(w->pit, buf, size, "VMSNAP_X86_PIT");
    case VMSNAP_X86_CLOCK: return StoreExact(w->clock, buf, size, "VMSNAP_X86_CLOCK");
    default:
      return Invalid("vmsnap_writer_set_vm_state: " + std::to_string(static_cast<int>(what)) +
                     " is not x86_64 VM state");
  }
  VMSNAP_GUARD_END
}

int vmsnap_writer_add_region(vmsnap_writer* w, const vmsnap_region* region) {
  VMSNAP_GUARD_BEGIN
  return WriterAddRegion(w, region, nullptr);
  VMSNAP_GUARD_END
}

int vmsnap_writer_add_region_pages(vmsnap_writer* w, const vmsnap_region* region, const uint8_t* dirty) {
  VMSNAP_CHECK_ARG(dirty, "vmsnap_writer_add_region_pages: dirty bitmap is NULL");
  VMSNAP_GUARD_BEGIN
  return WriterAddRegion(w, region, dirty);
  VMSNAP_GUARD_END
}

int vmsnap_writer_set_parent(vmsnap_writer* w, const char* parent_path) {
  if (int rc = CheckUsable(w, "vmsnap_writer_set_parent")) return rc;
  VMSNAP_CHECK_ARG(parent_path, "vmsnap_writer_set_parent: path is NULL");
  VMSNAP_GUARD_BEGIN
  if (!w->regions.empty()) return Invalid("vmsnap_writer_set_parent: call it before adding memory");
  auto info = capture::dirty::ReadParentInfo(parent_path);
  if (!info.ok()) return Fail(info.status());
  w->parent = std::move(info).value();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_writer_add_device(vmsnap_writer* w, const char* name, uint32_t version, const void* data, size_t size) {
  if (int rc = CheckUsable(w, "vmsnap_writer_add_device")) return rc;
  VMSNAP_CHECK_ARG(name && *name, "vmsnap_writer_add_device: a device record needs a name");
  VMSNAP_CHECK_ARG(data || size == 0, "vmsnap_writer_add_device: data is NULL");
  VMSNAP_GUARD_BEGIN
  for (const auto& d : w->devices) {
    if (d.name == name) return Invalid(std::string("vmsnap_writer_add_device: a record named \"") + name + "\" was already added");
  }
  const auto* p = static_cast<const uint8_t*>(data);
  w->devices.push_back({name, version, std::vector<uint8_t>(p, p + size)});
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_writer_commit(vmsnap_writer* w) {
  if (int rc = CheckUsable(w, "vmsnap_writer_commit")) return rc;
  VMSNAP_GUARD_BEGIN
  w->finished = true;
  Status st = CommitWriter(*w);
  if (!st.ok()) return Fail(st.Context("writing snapshot " + w->path));
  return Ok();
  VMSNAP_GUARD_END
}

}  // extern "C"

namespace vmsnap::capi {

kvm::x86::VmConfig ConfigFromC(const vmsnap_x86_vm_config& c) {
  kvm::x86::VmConfig k;
  k.tss_addr = c.tss_addr;
  k.identity_map_addr = c.identity_map_addr;
  k.irqchip = c.irqchip != 0;
  k.pit = c.pit != 0;
  k.pit_flags = c.pit_flags;
  if (c.exception_payload) {
    k.enabled_caps.push_back({KVM_CAP_EXCEPTION_PAYLOAD, "KVM_CAP_EXCEPTION_PAYLOAD", {1}});
  }
  return k;
}

// x86_64: the state as the caller gave it, read by the capture code as if
// from KVM.
Status CaptureX86(vmsnap_writer& w, schema::Manifest::Builder m) {
  StateVmOps vm(w.vcpus[0].get());
  vm.irqchips = w.irqchips;
  vm.pit = w.pit;
  vm.clock = w.clock;
  kvm::x86::VmConfig config;
  if (w.config) {
    config = *w.config;
  } else {
    config.irqchip = !w.irqchips.empty();
    config.pit = w.pit.has_value();
  }
  for (const auto& cap : config.enabled_caps) {
    if (cap.cap == KVM_CAP_EXCEPTION_PAYLOAD) vm.exception_payload = true;
  }
  std::vector<kvm::x86::VcpuOps*> ops;
  for (auto& v : w.vcpus) ops.push_back(v.get());
  capture::x86::X86Capturer capturer(&vm, ops, config);
  return capturer.Capture(m);
}

Status CommitWriter(vmsnap_writer& w) {
  if (w.other ? w.other->vcpu_count() == 0 : w.vcpus.empty()) return Status::InvalidArgument("no vCPU state was set");
  schema::Manifest::Builder m = w.writer->manifest();
  m.setArch(ToSchema(w.arch));
  capture::FillCreation(m.initCreated(), w.tool_version);
  auto map = m.initMemory();
  map.setPageSize(w.page_size);
  auto regions = map.initRegions(static_cast<unsigned>(w.regions.size()));
  for (size_t i = 0; i < w.regions.size(); ++i) {
    auto r = regions[static_cast<unsigned>(i)];
    r.setSlot(w.regions[i].slot);
    r.setGuestPhysAddr(w.regions[i].gpa);
    r.setSize(w.regions[i].size);
    r.setFlags(w.regions[i].flags);
    r.setName(w.regions[i].name);
  }
  if (w.parent) {
    auto ref = m.initParent();
    ref.setSnapshotId(capnp::Data::Reader(w.parent->id.data(), w.parent->id.size()));
    ref.setPath(capture::dirty::ParentPathFor(w.parent->path, w.path));
    ref.setDepth(w.parent->depth + 1);
  }

  if (w.other) {
    std::vector<MemRange> memory;
    for (const auto& r : w.regions) memory.push_back({r.gpa, r.size});
    VMSNAP_RETURN_IF_ERROR(w.other->Capture(memory, m));
  } else {
    VMSNAP_RETURN_IF_ERROR(CaptureX86(w, m));
  }

  auto devs = m.initDevices(static_cast<unsigned>(w.devices.size()));
  for (size_t i = 0; i < w.devices.size(); ++i) {
    auto d = devs[static_cast<unsigned>(i)];
    d.setName(w.devices[i].name);
    d.setVersion(w.devices[i].version);
    d.setData(capnp::Data::Reader(w.devices[i].data.data(), w.devices[i].data.size()));
  }
  auto stats = m.initSave();
  stats.setRounds(1);
  stats.setCompression(w.compression);
  return w.writer->Commit();
}

}  // namespace vmsnap::capi
