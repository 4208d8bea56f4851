// SPDX-License-Identifier: MIT
// The C API's KVM helpers: capture and restore over a VMM's own VM and vCPU
// fds, memory loading, dirty tracking. See include/vmsnap/vmsnap.h; the
// restore order enforced here is the one docs/state-coverage.md gives.
#include <capnp/message.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "base/hex.h"
#include "capture/dirty/incremental.h"
#include "capture/dirty/snapshot.h"
#include "format/compression_spec.h"
#include "format/load_history.h"
#include "capture/x86_64/x86_capture.h"
#include "kvm/kvm.h"
#include "kvm/x86_64/x86.h"
#include "lib/cxx.h"
#include "lib/internal.h"
#include "lib/writer.h"
#include "lib/x86_state.h"
#include "restore/memory/loader.h"
#include "restore/memory/vmm_loader.h"
#include "restore/restore.h"
#include "restore/x86_64/x86_restore.h"

using namespace vmsnap;
using namespace vmsnap::capi;

struct vmsnap_vm {
  std::unique_ptr<kvm::System> system;
  std::unique_ptr<kvm::Vm> vm;
  std::unique_ptr<kvm::x86::RealVmOps> vm_ops;
  std::optional<kvm::x86::VmConfig> config;
  std::vector<kvm::GuestRegion> regions;
  std::vector<std::unique_ptr<kvm::Vcpu>> vcpus;  // by index; null where not added
  std::vector<std::unique_ptr<kvm::x86::RealVcpuOps>> vcpu_ops;
  std::unique_ptr<capture::dirty::VmDirtyTracking> dirty;
  bool dirty_started = false;
  bool dirty_regions_set = false;
  // A restore: the snapshot, the restore order's steps (which refuse a step
  // out of turn), the x86 restorer they drive and the loader that filled the
  // memory (shared with a lazy load's vmsnap_pager).
  const vmsnap_snapshot* restoring = nullptr;
  std::unique_ptr<restore::x86::X86Restorer> restorer;
  std::unique_ptr<restore::RestoreSteps> steps;
  std::shared_ptr<restore::MemoryLoader> loader;
  // A warm VM (vmsnap_vm_prepare_warm): configured, with its memory and
  // vCPUs, before its snapshot is known; the host's CPUID found then.
  bool warm = false;
  std::vector<kvm_cpuid_entry2> host_cpuid;
  // A warm VM's pager, armed before its snapshot is known
  // (vmsnap_vm_arm_pager); the load takes it.
  std::unique_ptr<memory::LazyPager> armed_pager;
  bool memory_loaded() const { return steps && steps->memory_loaded(); }
  bool state_restored() const { return steps && steps->state_restored(); }
  bool has_vcpus() const {
    for (const auto& v : vcpus) {
      if (v) return true;
    }
    return false;
  }
};

struct vmsnap_pager {
  std::shared_ptr<memory::LazyLoader> loader;  // also the VM's, for the restore order
  vmsnap_fetch_fn fetch = nullptr;             // the caller's, called by the loader's threads
  void* fetch_ctx = nullptr;
};

namespace {

// The most vCPUs a VM handle takes (vmsnap_vm_add_vcpu's index bound).
constexpr unsigned kMaxVcpus = 1024;

int Usable(vmsnap_vm* vm, const char* call) {
  if (!vm) return Invalid(std::string(call) + ": vm is NULL");
  return VMSNAP_OK;
}

std::vector<kvm::x86::VcpuOps*> OpsByIndex(vmsnap_vm& vm) {
  std::vector<kvm::x86::VcpuOps*> ops;
  for (auto& o : vm.vcpu_ops) ops.push_back(o.get());
  return ops;
}

Status CheckAllVcpus(vmsnap_vm& vm, const char* call) {
  if (vm.vcpus.empty()) return Status::InvalidArgument(std::string(call) + ": no vCPU was added (vmsnap_vm_add_vcpu)");
  for (size_t i = 0; i < vm.vcpus.size(); ++i) {
    if (!vm.vcpus[i]) {
      return Status::InvalidArgument(std::string(call) + ": vCPU " + std::to_string(i) +
                                     " was not added, but a higher index was");
    }
  }
  return Status::Ok();
}

// Why SNAP cannot be restored into the warm VM, or Ok: the same vCPU count,
// memory regions and VM configuration (the dirty ring's size is the old
// VMM's choice and never replayed, so it does not count).
Status FitOf(const vmsnap_vm& vm, const SnapshotChain& chain) {
  auto no = [](const std::string& why) { return Status::Unsupported(why); };
  schema::Manifest::Reader m = chain.leaf().manifest();
  if (m.getArch() != schema::Arch::X8664 || !m.getVm().isX8664()) return no("it is not an x86_64 snapshot");
  if (m.getVcpus().size() != vm.vcpus.size()) {
    return no("it has " + std::to_string(m.getVcpus().size()) + " vCPUs, the VM " + std::to_string(vm.vcpus.size()));
  }
  auto regions = m.getMemory().getRegions();
  const uint32_t log = KVM_MEM_LOG_DIRTY_PAGES;
  uint64_t snap_total = 0, vm_total = 0;
  for (auto r : regions) snap_total += r.getSize();
  for (const auto& g : vm.regions) vm_total += g.size;
  bool same = regions.size() == vm.regions.size();
  for (size_t i = 0; same && i < vm.regions.size(); ++i) {
    auto r = regions[static_cast<unsigned>(i)];
    const kvm::GuestRegion& g = vm.regions[i];
    same = r.getSlot() == g.slot && r.getGuestPhysAddr() == g.gpa && r.getSize() == g.size &&
           (r.getFlags() & ~log) == (g.flags & ~log);
  }
  if (!same) {
    return no("its memory (" + std::to_string(snap_total >> 20) + " MiB in " + std::to_string(regions.size()) +
              " regions) is not laid out as the VM's (" + std::to_string(vm_total >> 20) + " MiB in " +
              std::to_string(vm.regions.size()) + ")");
  }
  kvm::x86::VmConfig c = state::x86::Decode(m.getVm().getX8664().getConfig());
  const kvm::x86::VmConfig& w = *vm.config;
  bool caps = c.enabled_caps.size() == w.enabled_caps.size();
  for (size_t i = 0; caps && i < c.enabled_caps.size(); ++i) {
    caps = c.enabled_caps[i].cap == w.enabled_caps[i].cap && c.enabled_caps[i].args == w.enabled_caps[i].args;
  }
  if (!caps || c.tss_addr != w.tss_addr || c.identity_map_addr != w.identity_map_addr || c.irqchip != w.irqchip ||
      c.pit != w.pit || c.pit_flags != w.pit_flags) {
    return no("its VM configuration (capabilities, irqchip, PIT) differs from the VM's");
  }
  return Status::Ok();
}

// The restore's checks (the steps before anything of the VM changes), with
// the options' choices; on success the VM is restoring SNAP.
Status BeginRestore(vmsnap_vm& vm, const vmsnap_snapshot* snap, uint32_t flags, const char* who) {
  if (vm.restoring) return Status::InvalidArgument(std::string(who) + ": a restore was begun already");
  if (vm.warm) {
    VMSNAP_RETURN_IF_ERROR(FitOf(vm, *snap->chain).Context(std::string(who) + ": snapshot " + snap->path +
                                                           " does not fit the warm VM"));
  } else {
    if (vm.config) {
      return Status::InvalidArgument(std::string(who) + ": the VM is configured already; restore needs a fresh VM");
    }
    if (vm.has_vcpus()) return Status::InvalidArgument(std::string(who) + ": must precede every vCPU");
  }
  auto restorer = std::make_unique<restore::x86::X86Restorer>(*vm.vm_ops);
  // The dirty ring is the new VMM's choice (vmsnap_vm_dirty_enable), not
  // replayed from the file, unless asked for.
  restorer->set_replay_dirty_logging((flags & VMSNAP_RESTORE_REPLAY_DIRTY_LOGGING) != 0);
  if (vm.warm) {
    restorer->set_preconfigured(*vm.config);
    restorer->set_host_cpuid(vm.host_cpuid);
  }
  auto steps = std::make_unique<restore::RestoreSteps>(snap->chain, schema::Arch::X8664, kMaxVcpus);
  VMSNAP_RETURN_IF_ERROR(steps->CheckSnapshot());
  VMSNAP_RETURN_IF_ERROR(steps->CheckHost(*restorer, who));
  vm.restorer = std::move(restorer);
  vm.steps = std::move(steps);
  vm.restoring = snap;
  return Status::Ok();
}

// Fills the writer's state from the live VM: the capture code reads KVM into
// a manifest, and the restore mapping turns that back into kernel structs,
// so what the writer commits is exactly what a capture would have written.
Status CaptureInto(vmsnap_vm& vm, vmsnap_writer& w) {
  VMSNAP_RETURN_IF_ERROR(CheckAllVcpus(vm, "vmsnap_vm_capture"));
  if (!vm.config) {
    return Status::InvalidArgument("vmsnap_vm_capture: the VM's configuration is unknown "
                                   "(vmsnap_vm_configure or vmsnap_vm_restore_config first)");
  }
  capture::x86::X86Capturer capturer(vm.vm_ops.get(), OpsByIndex(vm), *vm.config);
  capnp::MallocMessageBuilder message;
  auto m = message.initRoot<schema::Manifest>();
  VMSNAP_RETURN_IF_ERROR(capturer.Capture(m));
  auto reader = m.asReader();
  w.vcpus.clear();
  VMSNAP_ASSIGN_OR_RETURN(kvm::x86::HostCaps caps, vm.vm_ops->ProbeCaps());
  for (unsigned i = 0; i < reader.getVcpus().size(); ++i) {
    VMSNAP_ASSIGN_OR_RETURN(StateVcpuOps st, X86VcpuState(reader.getVcpus()[i].getX8664(), i, caps.sregs2));
    w.vcpus.push_back(std::make_unique<StateVcpuOps>(std::move(st)));
  }
  auto x = reader.getVm().getX8664();
  StateVmOps vmstate;
  VMSNAP_RETURN_IF_ERROR(restore::x86::RestoreVm(vmstate, x));
  w.irqchips = vmstate.irqchips;
  w.pit = vmstate.pit;
  kvm_clock_data clock{};
  clock.clock = x.getClock().getClock();
  clock.flags = x.getClock().getFlags();
  clock.realtime = x.getClock().getRealtime();
  clock.host_tsc = x.getClock().getHostTsc();
  w.clock = clock;
  w.config = *vm.config;
  return Status::Ok();
}

}  // namespace


extern "C" {

int vmsnap_vm_attach(int vm_fd, vmsnap_vm** out) {
  VMSNAP_CHECK_ARG(out && vm_fd >= 0, "vmsnap_vm_attach: needs a VM fd and out");
  *out = nullptr;
  VMSNAP_GUARD_BEGIN
  auto v = std::make_unique<vmsnap_vm>();
  auto sys = kvm::System::Open();
  if (!sys.ok()) return Fail(sys.status());
  v->system = std::move(sys).value();
  v->vm = kvm::Vm::Borrow(v->system.get(), vm_fd);
  v->vm_ops = std::make_unique<kvm::x86::RealVmOps>(v->vm.get());
  *out = v.release();
  return Ok();
  VMSNAP_GUARD_END
}

void vmsnap_vm_free(vmsnap_vm* vm) { delete vm; }

int vmsnap_vm_configure(vmsnap_vm* vm, const vmsnap_x86_vm_config* config) {
  if (int rc = Usable(vm, "vmsnap_vm_configure")) return rc;
  VMSNAP_CHECK_ARG(config, "vmsnap_vm_configure: config is NULL");
  VMSNAP_GUARD_BEGIN
  if (vm->config) return Invalid("vmsnap_vm_configure: the VM is configured already");
  if (vm->has_vcpus()) return Invalid("vmsnap_vm_configure: must precede every vCPU (KVM refuses the irqchip after)");
  kvm::x86::VmConfig c = ConfigFromC(*config);
  if (vm->dirty) c.dirty_ring_bytes = 0;
  Status st = restore::x86::ApplyVmConfig(*vm->vm_ops, c);
  if (!st.ok()) return Fail(st);
  vm->config = std::move(c);
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_add_memory(vmsnap_vm* vm, const vmsnap_region* region) {
  if (int rc = Usable(vm, "vmsnap_vm_add_memory")) return rc;
  VMSNAP_CHECK_ARG(region && region->host, "vmsnap_vm_add_memory: region and region->host must be set");
  VMSNAP_GUARD_BEGIN
  if (vm->has_vcpus()) return Invalid("vmsnap_vm_add_memory: add memory before the vCPUs");
  if (vm->memory_loaded()) return Invalid("vmsnap_vm_add_memory: memory was loaded already");
  if (vm->warm) return Invalid("vmsnap_vm_add_memory: the VM is warm: its memory was all added before");
  kvm::GuestRegion g;
  g.slot = region->slot;
  g.flags = region->flags;
  g.gpa = region->guest_phys_addr;
  g.size = region->size;
  g.host = static_cast<uint8_t*>(region->host);
  g.name = region->name ? region->name : "slot " + std::to_string(region->slot);
  for (const auto& r : vm->regions) {
    if (r.slot == g.slot) return Invalid("vmsnap_vm_add_memory: slot " + std::to_string(g.slot) + " added twice");
  }
  kvm::MemorySlot slot;
  slot.slot = g.slot;
  // With the dirty ring, slots are registered already logging, so that
  // starting the tracker changes nothing in KVM later.
  slot.flags = g.flags | (vm->dirty && vm->dirty->mode() == capture::dirty::Mode::kRing
                              ? static_cast<uint32_t>(KVM_MEM_LOG_DIRTY_PAGES)
                              : 0u);
  slot.guest_phys_addr = g.gpa;
  slot.size = g.size;
  slot.userspace_addr = reinterpret_cast<uint64_t>(g.host);
  Status st = vm->vm->SetUserMemoryRegion(slot);
  if (!st.ok()) return Fail(st.Context("memory region " + g.name));
  vm->regions.push_back(std::move(g));
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_add_vcpu(vmsnap_vm* vm, uint32_t index, int vcpu_fd) {
  if (int rc = Usable(vm, "vmsnap_vm_add_vcpu")) return rc;
  VMSNAP_CHECK_ARG(vcpu_fd >= 0 && index < kMaxVcpus, "vmsnap_vm_add_vcpu: bad vCPU fd or index");
  VMSNAP_GUARD_BEGIN
  if (!vm->config) {
    return Invalid("vmsnap_vm_add_vcpu: configure the VM first (vmsnap_vm_configure or vmsnap_vm_restore_config): "
                   "the irqchip must exist before any vCPU");
  }
  if (vm->restoring && !vm->memory_loaded()) {
    return Invalid("vmsnap_vm_add_vcpu: load the snapshot's memory first (vmsnap_vm_load_memory)");
  }
  if (vm->state_restored()) return Invalid("vmsnap_vm_add_vcpu: the VM's state was restored already");
  if (vm->warm) return Invalid("vmsnap_vm_add_vcpu: the VM is warm: its vCPUs were all added before");
  if (vm->vcpus.size() <= index) {
    vm->vcpus.resize(index + 1);
    vm->vcpu_ops.resize(index + 1);
  }
  if (vm->vcpus[index]) return Invalid("vmsnap_vm_add_vcpu: vCPU " + std::to_string(index) + " added twice");
  if (vm->dirty) {
    if (!vm->dirty_regions_set) {
      Status st = vm->dirty->SetRegions(vm->regions);
      if (!st.ok()) return Fail(st);
      vm->dirty_regions_set = true;
    }
    Status st = vm->dirty->AttachVcpu(vcpu_fd, static_cast<int>(index));
    if (!st.ok()) return Fail(st);
  }
  vm->vcpus[index] = kvm::Vcpu::Borrow(static_cast<int>(index), vcpu_fd);
  vm->vcpu_ops[index] = std::make_unique<kvm::x86::RealVcpuOps>(vm->vcpus[index].get());
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_capture(vmsnap_vm* vm, vmsnap_writer* w) {
  if (int rc = Usable(vm, "vmsnap_vm_capture")) return rc;
  VMSNAP_CHECK_ARG(w && !w->finished, "vmsnap_vm_capture: needs a writer that was not committed");
  if (w->arch != VMSNAP_ARCH_X86_64) {
    return Fail(Status::WrongArch(std::string("vmsnap_vm_capture: the writer is for ") + vmsnap_arch_name(w->arch) +
                                  ", the VM is x86_64"));
  }
  VMSNAP_GUARD_BEGIN
  Status st = CaptureInto(*vm, *w);
  if (!st.ok()) return Fail(st);
  std::vector<kvm::GuestRegion> sorted = vm->regions;
  std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.gpa < b.gpa; });
  std::optional<capture::dirty::PageSet> pages;
  if (w->parent) {
    if (!vm->dirty || !vm->dirty_started) {
      return Invalid("vmsnap_vm_capture: the writer names a parent, but dirty tracking is not running "
                     "(vmsnap_vm_dirty_enable and vmsnap_vm_dirty_start)");
    }
    auto taken = vm->dirty->TakeSinceLastSnapshot();
    if (!taken.ok()) return Fail(taken.status());
    pages = std::move(taken).value();
  } else if (vm->dirty && vm->dirty_started) {
    // A full snapshot is a new base too: what was dirty before is in it.
    auto taken = vm->dirty->TakeSinceLastSnapshot();
    if (!taken.ok()) return Fail(taken.status());
  }
  for (const auto& r : sorted) {
    vmsnap_region cr{r.slot, r.flags & ~static_cast<uint32_t>(KVM_MEM_LOG_DIRTY_PAGES), r.gpa, r.size, r.host,
                     r.name.c_str()};
    int rc;
    if (pages) {
      const auto& lay = vm->dirty->layout();
      size_t li = 0;
      while (li < lay.regions().size() && lay.regions()[li].gpa != r.gpa) ++li;
      uint64_t n = lay.region_pages(li);
      uint64_t first = lay.first_index(li);
      std::vector<uint8_t> bits((n + 7) / 8, 0);
      for (uint64_t p = 0; p < n; ++p) {
        if (pages->Test(first + p)) bits[p / 8] |= uint8_t(1u << (p % 8));
      }
      rc = WriterAddRegion(w, &cr, bits.data());
    } else {
      rc = WriterAddRegion(w, &cr, nullptr);
    }
    if (rc != VMSNAP_OK) {
      if (pages) vm->dirty->GiveBack(*pages);
      return rc;
    }
  }
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_restore_check(vmsnap_vm* vm, const vmsnap_snapshot* snap, const vmsnap_restore_options* options) {
  if (int rc = Usable(vm, "vmsnap_vm_restore_check")) return rc;
  VMSNAP_CHECK_ARG(snap, "vmsnap_vm_restore_check: snapshot is NULL");
  VMSNAP_GUARD_BEGIN
  vmsnap_restore_options o{};
  if (options) {
    if (options->struct_size < sizeof(uint32_t) || options->struct_size > sizeof o) {
      return Invalid("vmsnap_vm_restore_check: options->struct_size is " + std::to_string(options->struct_size) +
                     "; set it to sizeof(vmsnap_restore_options)");
    }
    std::memcpy(&o, options, options->struct_size);
  }
  Status st = BeginRestore(*vm, snap, o.flags, "vmsnap_vm_restore_check");
  if (!st.ok()) return Fail(st);
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_restore_config(vmsnap_vm* vm, const vmsnap_snapshot* snap) {
  if (int rc = Usable(vm, "vmsnap_vm_restore_config")) return rc;
  VMSNAP_CHECK_ARG(snap, "vmsnap_vm_restore_config: snapshot is NULL");
  VMSNAP_GUARD_BEGIN
  const char* who = "vmsnap_vm_restore_config";
  if (!vm->restoring) {
    Status st = BeginRestore(*vm, snap, 0, who);
    if (!st.ok()) return Fail(st);
  } else if (vm->restoring != snap) {
    return Invalid("vmsnap_vm_restore_config: the restore was begun with another snapshot");
  }
  if (vm->has_vcpus() && !vm->warm) return Invalid("vmsnap_vm_restore_config: must precede every vCPU");
  Status st = vm->steps->ConfigureVm(who);
  if (!st.ok()) return Fail(st);
  vm->config = vm->restorer->config();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_prepare_warm(vmsnap_vm* vm) {
  if (int rc = Usable(vm, "vmsnap_vm_prepare_warm")) return rc;
  VMSNAP_GUARD_BEGIN
  if (vm->warm) return Invalid("vmsnap_vm_prepare_warm: the VM is warm already");
  if (vm->restoring) return Invalid("vmsnap_vm_prepare_warm: the VM is being restored");
  if (!vm->config) return Invalid("vmsnap_vm_prepare_warm: configure the VM first (vmsnap_vm_configure)");
  if (vm->regions.empty()) return Invalid("vmsnap_vm_prepare_warm: add its memory first (vmsnap_vm_add_memory)");
  Status st = CheckAllVcpus(*vm, "vmsnap_vm_prepare_warm");
  if (!st.ok()) return Fail(st);
  auto cpuid = restore::x86::HostCpuid(*vm->vm_ops, *vm->vcpu_ops[0]);
  if (!cpuid.ok()) return Fail(cpuid.status());
  vm->host_cpuid = std::move(cpuid).value();
  vm->warm = true;
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_arm_pager(vmsnap_vm* vm) {
  if (int rc = Usable(vm, "vmsnap_vm_arm_pager")) return rc;
  VMSNAP_GUARD_BEGIN
  if (!vm->warm) return Invalid("vmsnap_vm_arm_pager: only a warm VM's pager is armed ahead (vmsnap_vm_prepare_warm)");
  if (vm->restoring) return Invalid("vmsnap_vm_arm_pager: the VM is being restored");
  if (vm->armed_pager) return Invalid("vmsnap_vm_arm_pager: the pager is armed already");
  auto armed = memory::LazyPager::Arm(vm->regions);
  if (!armed.ok()) return Fail(armed.status());
  vm->armed_pager = std::move(armed).value();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_check_fit(const vmsnap_vm* vm, const vmsnap_snapshot* snap) {
  VMSNAP_CHECK_ARG(vm && snap, "vmsnap_vm_check_fit: vm and snapshot must not be NULL");
  VMSNAP_GUARD_BEGIN
  if (!vm->warm) return Invalid("vmsnap_vm_check_fit: the VM is not warm (vmsnap_vm_prepare_warm)");
  Status st = FitOf(*vm, *snap->chain);
  if (!st.ok()) return Fail(st);
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_load_memory(vmsnap_vm* vm, const vmsnap_snapshot* snap, const vmsnap_load_options* options,
                          vmsnap_pager** pager) {
  if (int rc = Usable(vm, "vmsnap_vm_load_memory")) return rc;
  VMSNAP_CHECK_ARG(snap, "vmsnap_vm_load_memory: snapshot is NULL");
  VMSNAP_GUARD_BEGIN
  if (pager) *pager = nullptr;
  if (vm->restoring != snap) {
    return Invalid("vmsnap_vm_load_memory: call vmsnap_vm_restore_config with this snapshot first");
  }
  if (vm->has_vcpus() && !vm->warm) return Invalid("vmsnap_vm_load_memory: load memory before adding vCPUs");
  vmsnap_load_options o{};
  if (options) {
    if (options->struct_size < sizeof(uint32_t) || options->struct_size > sizeof o) {
      return Invalid("vmsnap_vm_load_memory: options->struct_size is " + std::to_string(options->struct_size) +
                     "; set it to sizeof(vmsnap_load_options)");
    }
    std::memcpy(&o, options, options->struct_size);
  }
  std::shared_ptr<memory::LazyLoader> lazy;
  std::shared_ptr<restore::MemoryLoader> loader;
  std::unique_ptr<vmsnap_pager> owned_pager;
  if (o.mode == VMSNAP_MEMORY_LAZY) {
    if (!pager) return Invalid("vmsnap_vm_load_memory: a lazy load needs somewhere to return the pager");
    memory::LazyOptions lo;
    lo.background_threads = o.threads;
    if (o.first_pages) lo.first_pages.assign(o.first_pages, o.first_pages + o.first_page_count);
    lo.hold_fill = (o.flags & VMSNAP_LOAD_HOLD_FILL) != 0;
    lo.start_pages = (o.flags & VMSNAP_LOAD_START_PAGES) != 0;
    if (o.on_error) {
      vmsnap_pager_error_fn fn = o.on_error;
      void* ctx = o.on_error_ctx;
      lo.on_error = [fn, ctx](const Status& s) {
        // On the pager thread: its last error holds the message.
        int code = Fail(s);
        fn(code, vmsnap_last_error(), ctx);
      };
    }
    auto* handle = new vmsnap_pager{nullptr, o.fetch, o.fetch_ctx};
    owned_pager.reset(handle);
    if (o.fetch) {
      lo.fetch_chunk = [handle](size_t layer, size_t chunk) {
        char message[512] = "";
        int rc = handle->fetch(static_cast<uint32_t>(layer), chunk, message, sizeof message, handle->fetch_ctx);
        if (rc == VMSNAP_OK) return Status::Ok();
        message[sizeof message - 1] = '\0';
        return Status::Io(message[0] ? std::string(message)
                                     : "fetching chunk " + std::to_string(chunk) + " failed (" +
                                           vmsnap_status_name(rc) + ")");
      };
    }
    // Without VMSNAP_LOAD_MAP_FILE the caller's memory stays the caller's
    // mapping: pages are copied in, never mapped from the file.
    lazy = std::make_shared<memory::LazyLoader>(std::move(lo), (o.flags & VMSNAP_LOAD_MAP_FILE) != 0);
    if (vm->armed_pager) lazy->set_armed(std::move(vm->armed_pager));
    if (o.verified_dir) lazy->set_stamp_dir(o.verified_dir);
    if (o.image_dir) lazy->set_image_dir(o.image_dir, (o.flags & VMSNAP_LOAD_BUILD_IMAGE) != 0);
    handle->loader = lazy;
    loader = lazy;
  } else {
    memory::EagerOptions eo;
    eo.threads = o.threads;
    if (o.progress) {
      vmsnap_progress_fn fn = o.progress;
      void* ctx = o.progress_ctx;
      eo.progress = [fn, ctx](uint64_t d, uint64_t t) { fn(d, t, ctx); };
    }
    loader = std::make_shared<memory::ParallelEagerLoader>(std::move(eo));
    vm->armed_pager.reset();  // the copy must not fault into it
  }
  Status st = vm->steps->LoadMemory(*loader, vm->regions, "vmsnap_vm_load_memory");
  if (!st.ok()) return Fail(st);
  vm->loader = loader;
  if (lazy) *pager = owned_pager.release();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_pager_wait(vmsnap_pager* pager) {
  VMSNAP_CHECK_ARG(pager, "vmsnap_pager_wait: pager is NULL");
  VMSNAP_GUARD_BEGIN
  if (pager->loader->mapped()) return Ok();  // mapped from the file or an image: nothing to fill
  memory::LazyPager* p = pager->loader->pager();
  if (!p) return Fail(Status::Internal("vmsnap_pager_wait: the pager was stopped (the restore failed)"));
  Status st = p->Wait();
  if (!st.ok()) return Fail(st);
  return Ok();
  VMSNAP_GUARD_END
}

void vmsnap_pager_release(vmsnap_pager* pager) {
  if (pager == nullptr) return;
  if (memory::LazyPager* p = pager->loader->pager()) p->Release();
}

void vmsnap_pager_stop(vmsnap_pager* pager) {
  if (pager) pager->loader->Stop();
  delete pager;
}

namespace {

// What the state steps (vmsnap_vm_restore_state and
// vmsnap_vm_restore_untimed_state) need first: SNAP's config restored, its
// memory loaded, every vCPU made; the vCPUs then handed to the restorer.
int BeginStateStep(vmsnap_vm* vm, const vmsnap_snapshot* snap, const std::string& who) {
  if (vm->restoring != snap) return Invalid(who + ": call vmsnap_vm_restore_config with this snapshot first");
  if (!vm->memory_loaded()) return Invalid(who + ": load the memory first (vmsnap_vm_load_memory)");
  Status st = CheckAllVcpus(*vm, who.c_str());
  if (!st.ok()) return Fail(st);
  vm->restorer->set_vcpus(OpsByIndex(*vm));
  return 0;
}

}  // namespace

int vmsnap_vm_restore_state(vmsnap_vm* vm, const vmsnap_snapshot* snap) {
  if (int rc = Usable(vm, "vmsnap_vm_restore_state")) return rc;
  VMSNAP_CHECK_ARG(snap, "vmsnap_vm_restore_state: snapshot is NULL");
  VMSNAP_GUARD_BEGIN
  if (int rc = BeginStateStep(vm, snap, "vmsnap_vm_restore_state")) return rc;
  Status st = vm->steps->RestoreState(static_cast<unsigned>(vm->vcpus.size()), "vmsnap_vm_restore_state");
  if (!st.ok()) return Fail(st);
  // The restored memory is SNAP's: an incremental save builds on it.
  if (vm->dirty) {
    schema::Manifest::Reader m = snap->chain->leaf().manifest();
    capture::dirty::ParentInfo loaded;
    loaded.id = snap->chain->leaf().id();
    loaded.path = snap->path;
    loaded.depth = m.hasParent() ? m.getParent().getDepth() : 0;
    vm->dirty->set_last_snapshot(std::move(loaded));
  }
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_restore_untimed_state(vmsnap_vm* vm, const vmsnap_snapshot* snap) {
  if (int rc = Usable(vm, "vmsnap_vm_restore_untimed_state")) return rc;
  VMSNAP_CHECK_ARG(snap, "vmsnap_vm_restore_untimed_state: snapshot is NULL");
  VMSNAP_GUARD_BEGIN
  const char* who = "vmsnap_vm_restore_untimed_state";
  if (int rc = BeginStateStep(vm, snap, who)) return rc;
  Status st = vm->steps->RestoreUntimedState(static_cast<unsigned>(vm->vcpus.size()), who);
  if (!st.ok()) return Fail(st);
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_restore_cancel(vmsnap_vm* vm) {
  if (int rc = Usable(vm, "vmsnap_vm_restore_cancel")) return rc;
  VMSNAP_GUARD_BEGIN
  if (!vm->warm) return Invalid("vmsnap_vm_restore_cancel: only a warm VM's restore is cancelled (vmsnap_vm_prepare_warm)");
  if (!vm->restoring) return Ok();  // nothing was loaded
  if (vm->state_restored()) return Invalid("vmsnap_vm_restore_cancel: the state is restored already");
  // Nothing may fill or map the memory past this point.
  if (vm->loader) vm->loader->Discard();
  vm->loader.reset();
  // Whatever the load put there (a file or image mapped, pages copied)
  // gives way to untouched anonymous memory at the same addresses, as the
  // warm VM had it: KVM's slots keep pointing at them. A pager still armed
  // here means no load took the memory: it is untouched and stays
  // registered with that pager (new memory would not be).
  for (const kvm::GuestRegion& r : vm->armed_pager ? std::span<const kvm::GuestRegion>() : vm->regions) {
    void* p = ::mmap(r.host, r.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                     -1, 0);
    if (p == MAP_FAILED) {
      return Fail(Status::FromErrno(errno, "vmsnap_vm_restore_cancel: mmap of region at " + Hex(r.gpa)));
    }
  }
  vm->steps.reset();
  vm->restorer.reset();
  vm->restoring = nullptr;
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_save(vmsnap_vm* vm, const char* path, const vmsnap_save_options* options,
                   vmsnap_save_result* result) {
  if (int rc = Usable(vm, "vmsnap_vm_save")) return rc;
  VMSNAP_CHECK_ARG(path && *path, "vmsnap_vm_save: path is empty");
  VMSNAP_GUARD_BEGIN
  vmsnap_save_options o{};
  if (options) {
    if (options->struct_size < sizeof(uint32_t) || options->struct_size > sizeof o) {
      return Invalid("vmsnap_vm_save: options->struct_size is " + std::to_string(options->struct_size) +
                     "; set it to sizeof(vmsnap_save_options)");
    }
    std::memcpy(&o, options, options->struct_size);
  }
  if (result && (result->struct_size < sizeof(uint32_t) || result->struct_size > sizeof(vmsnap_save_result))) {
    return Invalid("vmsnap_vm_save: result->struct_size is " + std::to_string(result->struct_size) +
                   "; set it to sizeof(vmsnap_save_result)");
  }
  Status st = CheckAllVcpus(*vm, "vmsnap_vm_save");
  if (!st.ok()) return Fail(st);
  if (!vm->config) {
    return Invalid("vmsnap_vm_save: the VM's configuration is unknown "
                   "(vmsnap_vm_configure or vmsnap_vm_restore_config first)");
  }
  const bool live = (o.flags & VMSNAP_SAVE_LIVE) != 0;
  if (live && (!o.pause || !o.resume)) return Invalid("vmsnap_vm_save: a live save needs pause and resume");
  capture::CaptureOptions co;
  auto spec = ParseCompressionSpec(o.compression ? o.compression : "zstd:3");
  if (!spec.ok()) return Fail(spec.status().Context("vmsnap_vm_save"));
  Apply(*spec, co.writer);
  co.tool_version = o.tool_version ? o.tool_version : std::string("libvmsnap ") + vmsnap_version();
  co.pause_ns = o.pause_ns;
  if (o.progress) {
    vmsnap_progress_fn fn = o.progress;
    void* ctx = o.progress_ctx;
    co.writer.progress = [fn, ctx](uint64_t d, uint64_t t) { fn(d, t, ctx); };
  }
  if (o.loads && o.load_count) {
    co.loads.reserve(o.load_count);
    for (uint32_t i = 0; i < o.load_count; ++i) {
      const vmsnap_load_record& l = o.loads[i];
      LoadRecord r;
      std::memcpy(r.generation_id.data(), l.generation_id, r.generation_id.size());
      if (!l.booted) {
        layout::SnapshotId id{};
        std::memcpy(id.data(), l.snapshot_id, id.size());
        r.snapshot_id = id;
      }
      r.warm = l.warm != 0;
      r.time_unix_ns = l.time_unix_ns;
      co.loads.push_back(r);
    }
  }
  capture::dirty::SnapshotPlan plan;
  if (o.parent) {
    plan.parent = capture::dirty::ParentMode::kExplicit;
    plan.parent_path = o.parent;
  } else if (o.flags & VMSNAP_SAVE_INCREMENTAL) {
    plan.parent = capture::dirty::ParentMode::kAuto;
  }
  capture::x86::X86Capturer capturer(vm->vm_ops.get(), OpsByIndex(*vm), *vm->config);
  Result<capture::CaptureResult> r = Status::Ok();
  capture::dirty::LiveStats stats;
  if (live) {
    vmsnap_vm_fn pause = o.pause, resume = o.resume;
    void* ctx = o.pause_ctx;
    capture::dirty::LivePause lp{[pause, ctx] { pause(ctx); }, [resume, ctx] { resume(ctx); }};
    r = capture::dirty::SaveLive(vm->dirty.get(), capturer, path, plan, std::move(co), lp,
                                 capture::dirty::LiveOptions{}, &stats);
  } else {
    std::vector<kvm::GuestRegion> sorted = vm->regions;
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.gpa < b.gpa; });
    r = capture::dirty::SavePaused(vm->dirty.get(), capturer, sorted, path, plan, std::move(co));
    stats.rounds = 1;
  }
  if (!r.ok()) return Fail(r.status());
  if (result) {
    vmsnap_save_result out{};
    out.struct_size = result->struct_size;
    out.rounds = stats.rounds;
    out.file_size = r->file_size;
    out.pause_ns = stats.pause_ns;
    std::memcpy(out.id, r->id.data(), sizeof out.id);
    std::memcpy(result, &out, result->struct_size);
  }
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_dirty_enable(vmsnap_vm* vm, vmsnap_dirty_mode mode) {
  if (int rc = Usable(vm, "vmsnap_vm_dirty_enable")) return rc;
  VMSNAP_GUARD_BEGIN
  if (vm->dirty) return Invalid("vmsnap_vm_dirty_enable: enabled already");
  if (vm->has_vcpus() || !vm->regions.empty()) {
    return Invalid("vmsnap_vm_dirty_enable: must precede memory and vCPUs (KVM enables the ring only then)");
  }
  std::optional<capture::dirty::Mode> m;
  if (mode == VMSNAP_DIRTY_BITMAP) m = capture::dirty::Mode::kBitmap;
  if (mode == VMSNAP_DIRTY_RING) m = capture::dirty::Mode::kRing;
  auto d = capture::dirty::VmDirtyTracking::Prepare(vm->vm->fd(), m);
  if (!d.ok()) return Fail(d.status());
  vm->dirty = std::move(d).value();
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_dirty_start(vmsnap_vm* vm) {
  if (int rc = Usable(vm, "vmsnap_vm_dirty_start")) return rc;
  VMSNAP_GUARD_BEGIN
  if (!vm->dirty) return Invalid("vmsnap_vm_dirty_start: call vmsnap_vm_dirty_enable first");
  Status st = CheckAllVcpus(*vm, "vmsnap_vm_dirty_start");
  if (!st.ok()) return Fail(st);
  st = vm->dirty->Start();
  if (!st.ok()) return Fail(st);
  vm->dirty_started = true;
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_dirty_stop(vmsnap_vm* vm) {
  if (int rc = Usable(vm, "vmsnap_vm_dirty_stop")) return rc;
  VMSNAP_GUARD_BEGIN
  if (!vm->dirty || !vm->dirty_started) return Ok();
  Status st = vm->dirty->tracker().Stop();
  if (!st.ok()) return Fail(st);
  vm->dirty_started = false;
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_dirty_ring_full(vmsnap_vm* vm, uint32_t vcpu_index) {
  if (int rc = Usable(vm, "vmsnap_vm_dirty_ring_full")) return rc;
  VMSNAP_GUARD_BEGIN
  if (!vm->dirty) return Invalid("vmsnap_vm_dirty_ring_full: dirty tracking is not enabled");
  Status st = vm->dirty->tracker().HandleRingFull(static_cast<int>(vcpu_index));
  if (!st.ok()) return Fail(st);
  return Ok();
  VMSNAP_GUARD_END
}

int vmsnap_vm_dirty_mark(vmsnap_vm* vm, uint64_t gpa, uint64_t len) {
  if (int rc = Usable(vm, "vmsnap_vm_dirty_mark")) return rc;
  VMSNAP_GUARD_BEGIN
  if (vm->dirty && vm->dirty_started) vm->dirty->tracker().MarkDirty(gpa, len);
  return Ok();
  VMSNAP_GUARD_END
}

}  // extern "C"

