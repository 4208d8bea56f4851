// SPDX-License-Identifier: MIT
// aarch64 vCPU and VM state held in memory behind kvm::arm64::Vcpu/Vm/Device:
// written through capture/aarch64, read through restore/aarch64's steps (see
// arch_state.h).
#include <algorithm>
#include <map>
#include <optional>

#include "capture/aarch64/arm64_capture.h"
#include "lib/arch_state.h"
#include "lib/internal.h"
#include "restore/aarch64/arm64_restore.h"

namespace vmsnap::capi {
namespace {
namespace ka = kvm::arm64;

static_assert(sizeof(vmsnap_device_attr) == 24);

class MemVcpu final : public ka::Vcpu, public MemVcpuState {
 public:
  explicit MemVcpu(uint32_t index) : MemVcpuState(index) {}
  std::optional<ka::VcpuInit> init;
  std::optional<kvm_mp_state> mp;
  std::optional<ka::VcpuEvents> events;

  int Init(const ka::VcpuInit& i) override { init = i; return 0; }
  int Finalize(int) override { return 0; }
  int GetRegList(uint64_t* n, uint64_t* ids) override {
    const uint64_t room = *n;
    *n = one.size();
    if (room < one.size()) return -E2BIG;
    for (size_t i = 0; i < one.size(); ++i) ids[i] = one[i].id;
    return 0;
  }
  int GetOneReg(const kvm_one_reg& r) override { return ReadOneReg(r); }
  int SetOneReg(const kvm_one_reg& r) override { return WriteOneReg(r); }
  int GetMpState(kvm_mp_state* s) override { return Get(mp, s, "VMSNAP_ARM64_MP_STATE"); }
  int SetMpState(const kvm_mp_state& s) override { mp = s; return 0; }
  int GetEvents(ka::VcpuEvents* e) override { return Get(events, e, "VMSNAP_ARM64_EVENTS"); }
  int SetEvents(const ka::VcpuEvents& e) override { events = e; return 0; }
};

// Bytes an attribute's value takes in the kernel's interface.
size_t AttrWidth(uint32_t group) {
  switch (group) {
    case ka::kGrpAddr:
    case ka::kGrpCpuSysregs:
    case ka::kGrpItsRegs: return 8;
    default: return 4;
  }
}

class MemDevice final : public ka::Device {
 public:
  MemDevice(const char* state) : state_(state) {}
  std::vector<vmsnap_device_attr> attrs;  // given (write) or set (read), in order
  std::string missing;

  int SetAttr(const kvm_device_attr& a) override {
    if (a.group == ka::kGrpCtrl) return 0;  // init and table saves: no state of their own
    uint64_t v = 0;
    if (AttrWidth(a.group) == 8) {
      std::memcpy(&v, reinterpret_cast<const void*>(a.addr), 8);
    } else {
      uint32_t v32;
      std::memcpy(&v32, reinterpret_cast<const void*>(a.addr), 4);
      v = v32;
    }
    if (vmsnap_device_attr* e = Find(a.group, a.attr)) {
      e->value = v;
    } else {
      attrs.push_back({0, a.group, a.attr, v});
    }
    return 0;
  }
  int GetAttr(const kvm_device_attr& a) override {
    const vmsnap_device_attr* e = Find(a.group, a.attr);
    if (!e) {
      missing = std::string(state_) + " has no attribute of group " + std::to_string(a.group) + ", attr " +
                IdHex(a.attr) + ", which the capture reads (vmsnap_writer_set_vm_state)";
      return -ENXIO;
    }
    if (AttrWidth(a.group) == 8) {
      std::memcpy(reinterpret_cast<void*>(a.addr), &e->value, 8);
    } else {
      const uint32_t v32 = static_cast<uint32_t>(e->value);
      std::memcpy(reinterpret_cast<void*>(a.addr), &v32, 4);
    }
    return 0;
  }
  int HasAttr(const kvm_device_attr& a) override { return Find(a.group, a.attr) ? 0 : -ENXIO; }

  // The list as an answer: without the clear halves a restore writes first.
  std::vector<vmsnap_device_attr> State() const {
    std::vector<vmsnap_device_attr> out;
    for (const auto& e : attrs) {
      const bool pair_reg = e.group == ka::kGrpDistRegs || e.group == ka::kGrpRedistRegs;
      if (pair_reg && ka::IsClearOffset(static_cast<uint32_t>(e.attr & ka::kAttrOffsetMask))) continue;
      out.push_back(e);
    }
    return out;
  }

 private:
  vmsnap_device_attr* Find(uint32_t group, uint64_t attr) {
    for (auto& e : attrs) {
      if (e.group == group && e.attr == attr) return &e;
    }
    return nullptr;
  }
  const char* state_;
};

// Devices the read side's restore creates; the VM keeps them.
class MemVm final : public ka::Vm {
 public:
  std::optional<ka::CounterOffset> counter;
  MemDevice* gic = nullptr;
  MemDevice* its = nullptr;
  int CreateDevice(uint32_t type, std::unique_ptr<ka::Device>* out) override {
    auto d = std::make_unique<MemDevice>(type == ka::kDevTypeIts ? "VMSNAP_ARM64_ITS" : "VMSNAP_ARM64_VGIC");
    (type == ka::kDevTypeIts ? its : gic) = d.get();
    *out = std::move(d);
    return 0;
  }
  int SetCounterOffset(const ka::CounterOffset& off) override {
    counter = off;
    return 0;
  }
};

Result<std::vector<vmsnap_device_attr>> ParseAttrs(const void* buf, size_t size, const char* name) {
  if (size % sizeof(vmsnap_device_attr)) {
    return Status::InvalidArgument(std::string(name) + ": size " + std::to_string(size) +
                                   " is not a multiple of 24 (struct vmsnap_device_attr)");
  }
  std::vector<vmsnap_device_attr> out(size / sizeof(vmsnap_device_attr));
  std::memcpy(out.data(), buf, size);
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i].flags != 0) {
      return Status::InvalidArgument(std::string(name) + ": entry " + std::to_string(i) + " has flags " +
                                     std::to_string(out[i].flags) + "; they must be zero");
    }
    if (AttrWidth(out[i].group) == 4 && out[i].value > 0xffffffffull) {
      return Status::InvalidArgument(std::string(name) + ": entry " + std::to_string(i) + " (group " +
                                     std::to_string(out[i].group) + ") holds a 32-bit register, but its value " +
                                     IdHex(out[i].value) + " is wider");
    }
  }
  return out;
}

class Arm64Writer final : public ArchWriter {
 public:
  uint32_t page_size() const override { return 4096; }
  size_t vcpu_count() const override { return vcpus_.size(); }

  int SetVcpu(uint32_t vcpu, vmsnap_state what, const void* buf, size_t size) override {
    MemVcpu& v = VcpuAt(vcpus_, vcpu);
    switch (what) {
      case VMSNAP_ARM64_VCPU_INIT: return StoreExact(v.init, buf, size, "VMSNAP_ARM64_VCPU_INIT");
      case VMSNAP_ARM64_MP_STATE: return StoreExact(v.mp, buf, size, "VMSNAP_ARM64_MP_STATE");
      case VMSNAP_ARM64_EVENTS: return StoreExact(v.events, buf, size, "VMSNAP_ARM64_EVENTS");
      case VMSNAP_ONE_REGS: return StoreOneRegs(v.one, buf, size);
      default: return NotStateOf(what, "aarch64 per-vCPU");
    }
  }

  int SetVm(vmsnap_state what, const void* buf, size_t size) override {
    switch (what) {
      case VMSNAP_ARM64_VGIC:
      case VMSNAP_ARM64_ITS: {
        const char* name = what == VMSNAP_ARM64_VGIC ? "VMSNAP_ARM64_VGIC" : "VMSNAP_ARM64_ITS";
        auto r = ParseAttrs(buf, size, name);
        if (!r.ok()) return Fail(r.status());
        auto d = std::make_unique<MemDevice>(name);
        d->attrs = std::move(r).value();
        (what == VMSNAP_ARM64_VGIC ? gic_ : its_) = std::move(d);
        return Ok();
      }
      case VMSNAP_ARM64_COUNTER_OFFSET: return StoreExact(counter_, buf, size, "VMSNAP_ARM64_COUNTER_OFFSET");
      default: return NotStateOf(what, "aarch64 VM");
    }
  }

  Status Capture(const std::vector<MemRange>&, schema::Manifest::Builder m) override {
    capture::aarch64::Options o;
    for (size_t i = 0; i < vcpus_.size(); ++i) {
      if (!vcpus_[i]->init) {
        return Status::InvalidArgument("vCPU " + std::to_string(i) +
                                       " has no VMSNAP_ARM64_VCPU_INIT state (vmsnap_writer_set_vcpu_state)");
      }
      o.inits.push_back(*vcpus_[i]->init);
    }
    if (its_ && !gic_) return Status::InvalidArgument("VMSNAP_ARM64_ITS was set without VMSNAP_ARM64_VGIC");
    o.gic = gic_.get();
    o.its = its_.get();
    if (counter_) o.counter_offset = counter_->counter_offset;
    o.page_size = page_size();
    MemVm vm;
    std::vector<ka::Vcpu*> ops;
    for (auto& v : vcpus_) ops.push_back(v.get());
    Status st = capture::aarch64::CaptureManifest(vm, ops, o, m);
    if (!st.ok()) {
      for (auto& v : vcpus_) {
        if (!v->missing.empty()) return Status::InvalidArgument(v->missing);
      }
      for (auto* d : {gic_.get(), its_.get()}) {
        if (d && !d->missing.empty()) return Status::InvalidArgument(d->missing);
      }
      return st;
    }
    return Status::Ok();
  }

 private:
  std::vector<std::unique_ptr<MemVcpu>> vcpus_;
  std::unique_ptr<MemDevice> gic_, its_;
  std::optional<ka::CounterOffset> counter_;
};

int AnswerAttrs(const std::vector<vmsnap_device_attr>& a, void* buf, size_t buf_size, size_t* size) {
  return CopyOut(a.data(), a.size() * sizeof(vmsnap_device_attr), buf, buf_size, size);
}

}  // namespace

std::unique_ptr<ArchWriter> NewArm64Writer() { return std::make_unique<Arm64Writer>(); }

int ReadArm64Vcpu(const vmsnap_snapshot* s, uint32_t vcpu, vmsnap_state what, void* buf, size_t buf_size,
                  size_t* size) {
  MemVcpu st(vcpu);
  auto v = LeafManifest(s).getVcpus()[vcpu].getAarch64();
  // restore/aarch64's steps for one vCPU, minus the host's register-list
  // check: the state it would set, in the order it sets it.
  Status r = restore::aarch64::InitVcpu(st, v);
  if (r.ok()) r = restore::aarch64::RestoreVcpuRegs(st, v);
  if (r.ok()) r = restore::aarch64::RestoreVcpuEvents(st, v);
  if (!r.ok()) return Fail(r.Context("snapshot " + SnapshotPath(s) + ", vCPU " + std::to_string(vcpu)));
  switch (what) {
    case VMSNAP_ARM64_VCPU_INIT: return Answer(s, st.init, "aarch64 VCPU_INIT", buf, buf_size, size);
    case VMSNAP_ARM64_MP_STATE: return Answer(s, st.mp, "aarch64 MP_STATE", buf, buf_size, size);
    case VMSNAP_ARM64_EVENTS: return Answer(s, st.events, "aarch64 EVENTS", buf, buf_size, size);
    case VMSNAP_ONE_REGS: return AnswerOneRegs(st.one, buf, buf_size, size);
    default: return NotStateOf(what, "aarch64 per-vCPU");
  }
}

int ReadArm64Vm(const vmsnap_snapshot* s, vmsnap_state what, void* buf, size_t buf_size, size_t* size) {
  auto state = LeafManifest(s).getVm().getAarch64();
  MemVm vm;
  restore::aarch64::Devices devices;
  Status r = restore::aarch64::RestoreCounterOffset(vm, state);
  if (r.ok()) r = restore::aarch64::CreateDevices(vm, state, &devices);
  if (r.ok() && vm.gic) r = restore::aarch64::RestoreGicState(*vm.gic, state.getGic());
  if (r.ok() && vm.its) r = restore::aarch64::RestoreIts(*vm.its, state.getIts());
  if (!r.ok()) return Fail(r.Context("snapshot " + SnapshotPath(s)));
  switch (what) {
    case VMSNAP_ARM64_VGIC:
      if (!vm.gic) return Missing(s, "aarch64 vGICv3 state");
      return AnswerAttrs(vm.gic->State(), buf, buf_size, size);
    case VMSNAP_ARM64_ITS:
      if (!vm.its) return Missing(s, "aarch64 ITS state");
      return AnswerAttrs(vm.its->State(), buf, buf_size, size);
    case VMSNAP_ARM64_COUNTER_OFFSET:
      return Answer(s, vm.counter, "aarch64 COUNTER_OFFSET (the source did not set one)", buf, buf_size, size);
    default: return NotStateOf(what, "aarch64 VM");
  }
}

}  // namespace vmsnap::capi
