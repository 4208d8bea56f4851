// SPDX-License-Identifier: MIT
// The arm64 kernel model: see aarch64_model.h. Each rule names the kernel
// code or document it follows.
#include "tests/model/kernel/aarch64_model.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>

namespace vmsnap::kvm::model {
namespace a = arm64;
namespace {

// The system registers this model's KVM lists (a small, representative part
// of sys_regs.c's table: what an EL1 guest's MMU, exceptions and threads use).
const uint64_t kModelSysregs[] = {
    a::SysReg(2, 0, 0, 2, 2),    // MDSCR_EL1
    a::SysReg(3, 0, 0, 0, 5),    // MPIDR_EL1
    a::SysReg(3, 0, 0, 4, 0),    // ID_AA64PFR0_EL1
    a::SysReg(3, 0, 0, 7, 0),    // ID_AA64MMFR0_EL1
    a::SysReg(3, 0, 1, 0, 0),    // SCTLR_EL1
    a::SysReg(3, 0, 1, 0, 2),    // CPACR_EL1
    a::SysReg(3, 0, 2, 0, 0),    // TTBR0_EL1
    a::SysReg(3, 0, 2, 0, 1),    // TTBR1_EL1
    a::SysReg(3, 0, 2, 0, 2),    // TCR_EL1
    a::SysReg(3, 0, 5, 1, 0),    // AFSR0_EL1
    a::SysReg(3, 0, 5, 1, 1),    // AFSR1_EL1
    a::SysReg(3, 0, 5, 2, 0),    // ESR_EL1
    a::SysReg(3, 0, 6, 0, 0),    // FAR_EL1
    a::SysReg(3, 0, 7, 4, 0),    // PAR_EL1
    a::SysReg(3, 0, 10, 2, 0),   // MAIR_EL1
    a::SysReg(3, 0, 10, 3, 0),   // AMAIR_EL1
    a::SysReg(3, 0, 12, 0, 0),   // VBAR_EL1
    a::SysReg(3, 0, 13, 0, 1),   // CONTEXTIDR_EL1
    a::SysReg(3, 0, 13, 0, 4),   // TPIDR_EL1
    a::SysReg(3, 0, 14, 1, 0),   // CNTKCTL_EL1
    a::SysReg(3, 2, 0, 0, 0),    // CSSELR_EL1
    a::SysReg(3, 3, 13, 0, 2),   // TPIDR_EL0
    a::SysReg(3, 3, 13, 0, 3),   // TPIDRRO_EL0
};
constexpr uint64_t kDemuxCcsidr = a::kRegArm64 | a::kU32 | a::kDemux;  // KVM_REG_ARM_DEMUX_ID_CCSIDR | csselr
constexpr uint64_t kSveVqMask = 0xf;  // the model host's vector lengths: 128..512 bits
constexpr uint64_t kCtlIstatus = 1u << 2;
constexpr uint64_t kGitsBaserValid = 1ull << 63;
constexpr uint64_t kTableAddrMask = 0x0000fffffffff000ull;

bool IsTimer(uint64_t id) {
  return id == a::kTimerCtl || id == a::kTimerCnt || id == a::kTimerCval || id == a::kPtimerCtl ||
         id == a::kPtimerCnt || id == a::kPtimerCval;
}

}  // namespace

Arm64Model::Arm64Model(Host host) : host_(std::move(host)) {}
Arm64Model::~Arm64Model() = default;

bool Arm64Model::Inject(const char* op, int* ret) {
  Fault f;
  if (!faults_.Take(op, &f) || f.err == 0) return false;
  *ret = -f.err;
  return true;
}

// arm.c kvm_arch_vcpu_precreate(): no vCPU once the vGIC is initialized.
int Arm64Model::CreateVcpu(Arm64ModelVcpu** out) {
  if (gic_ && gic_->initialized()) return -EBUSY;
  vcpus_.push_back(std::make_unique<Arm64ModelVcpu>(this, static_cast<uint32_t>(vcpus_.size())));
  if (out) *out = vcpus_.back().get();
  return 0;
}

Arm64ModelVcpu* Arm64Model::VcpuByMpidrAttr(uint64_t attr_mpidr) {
  for (auto& v : vcpus_) {
    if (v->initialized() && a::MpidrToAttr(v->mpidr()) == attr_mpidr) return v.get();
  }
  return nullptr;
}

// kvm_ioctl_create_device(): one vGIC per VM (EEXIST); the ITS needs the vGICv3.
int Arm64Model::CreateDevice(uint32_t type, std::unique_ptr<a::Device>* out) {
  int ret;
  if (Inject("KVM_CREATE_DEVICE", &ret)) return ret;
  if (type == a::kDevTypeVgicV3) {
    if (gic_) return -EEXIST;
    auto d = std::make_unique<Arm64ModelGic>(this);
    gic_ = d.get();
    *out = std::move(d);
    return 0;
  }
  if (type == a::kDevTypeIts) {
    if (!gic_) return -ENODEV;
    auto d = std::make_unique<Arm64ModelIts>(this);
    its_ = d.get();
    *out = std::move(d);
    return 0;
  }
  return -ENODEV;
}

// kvm_vm_ioctl_set_counter_offset(): only before any vCPU ran; from then on
// writes of TIMER_CNT/PTIMER_CNT are ignored.
int Arm64Model::SetCounterOffset(const a::CounterOffset& off) {
  int ret;
  if (Inject("KVM_ARM_SET_COUNTER_OFFSET", &ret)) return ret;
  if (!host_.counter_offset) return -ENOTTY;
  if (off.reserved) return -EINVAL;
  if (ran_) return -EBUSY;
  voffset_ = poffset_ = off.counter_offset;
  has_counter_offset_ = true;
  return 0;
}

// ---------------------------------------------------------------- vCPU

void Arm64ModelVcpu::Poke(uint64_t id, uint64_t value) {
  auto& b = state_.regs[id];
  b.assign(a::OneRegSize(id), 0);
  if (b.size() == 4) {
    uint32_t v = static_cast<uint32_t>(value);
    std::memcpy(b.data(), &v, 4);
  } else if (b.size() == 8) {
    std::memcpy(b.data(), &value, 8);
  }
}

namespace {
// CTL.ISTATUS: enabled (bit 0) and the count has reached CVAL; IMASK only
// keeps the interrupt from the GIC.
bool TimerAsserted(uint64_t ctl, uint64_t cval, uint64_t phys, uint64_t offset) {
  return (ctl & 1) && phys - offset >= cval;
}
}  // namespace

bool Arm64ModelVcpu::vtimer_asserted() const {
  return TimerAsserted(state_.vctl, state_.vcval, vm_->phys_counter_, vtimer_offset_.value_or(vm_->voffset_));
}

bool Arm64ModelVcpu::ptimer_asserted() const {
  return TimerAsserted(state_.pctl, state_.pcval, vm_->phys_counter_, ptimer_offset_.value_or(vm_->poffset_));
}

uint64_t Arm64ModelVcpu::Peek(uint64_t id) const {
  auto it = state_.regs.find(id);
  if (it == state_.regs.end()) return 0;
  if (it->second.size() == 4) {
    uint32_t v;
    std::memcpy(&v, it->second.data(), 4);
    return v;
  }
  uint64_t v = 0;
  if (it->second.size() == 8) std::memcpy(&v, it->second.data(), 8);
  return v;
}

// arm.c kvm_arch_vcpu_ioctl_vcpu_init() / reset.c kvm_reset_vcpu(): the
// register file exists from here on; POWER_OFF starts the vCPU stopped.
int Arm64ModelVcpu::Init(const a::VcpuInit& init) {
  int ret;
  if (Inject("KVM_ARM_VCPU_INIT", &ret)) return ret;
  if (init.target != a::kTargetGenericV8) return -EINVAL;
  if (initialized_ && std::memcmp(&init, &init_, sizeof init) != 0) return -EINVAL;
  for (int w = 1; w < 7; ++w) {
    if (init.features[w]) return -ENOENT;
  }
  if (init.features[0] >> (a::kFeatureHasEl2 + 1)) return -ENOENT;
  if (a::HasFeature(init, a::kFeatureSve) && !vm_->host_.sve) return -EINVAL;
  if (initialized_) return 0;
  init_ = init;
  initialized_ = true;
  auto& r = state_.regs;
  for (unsigned i = 0; i < 31; ++i) Poke(a::XReg(i), 0);
  for (uint64_t id : {a::kRegSp, a::kRegPc, a::kRegSpEl1, a::kRegElrEl1}) Poke(id, 0);
  Poke(a::kRegPstate, 0x3c5);  // EL1h, DAIF masked: the reset state
  for (unsigned i = 0; i < a::kNrSpsr; ++i) Poke(a::SpsrReg(i), 0);
  if (!HasSve()) {
    for (unsigned i = 0; i < 32; ++i) r[a::VReg(i)].assign(16, 0);
  } else {
    // VLS is a u64[8] bitmap in host order: bit (vq-1) for each length.
    r[a::kRegSveVls].assign(64, 0);
    const uint64_t w0 = kSveVqMask;
    std::memcpy(r[a::kRegSveVls].data(), &w0, 8);
    for (unsigned i = 0; i < 32; ++i) r[a::ZReg(i)].assign(a::kZBytes, 0);
    for (unsigned i = 0; i < 16; ++i) r[a::PReg(i)].assign(a::kPBytes, 0);
    r[a::kRegFfr].assign(a::kPBytes, 0);
  }
  Poke(a::kRegFpsr, 0);
  Poke(a::kRegFpcr, 0);
  for (uint64_t id : kModelSysregs) {
    if (!vm_->host_.missing_sysregs.count(id)) Poke(id, 0);
  }
  Poke(a::kRegMpidrEl1, 0x80000000ull | index_);  // RES1 bit 31, Aff0 = vCPU index
  Poke(kDemuxCcsidr | 0, 0x700fe01a);
  Poke(kDemuxCcsidr | 1, 0x201fe01a);
  Poke(a::kFwPsciVersion, a::HasFeature(init, a::kFeaturePsci02) ? 0x10001 : 0);
  Poke(a::kFwSmcccWorkaround1, 1);
  Poke(a::kFwSmcccWorkaround2, 1);
  Poke(a::kFwSmcccWorkaround3, 1);
  for (unsigned i = 0; i < 3; ++i) Poke(a::FwBmapReg(i), i == 0 ? 0x7 : 0x1);
  if (a::HasFeature(init, a::kFeaturePowerOff)) state_.mp_state = KVM_MP_STATE_STOPPED;
  return 0;
}

// arm.c kvm_arm_vcpu_finalize(): only SVE is finalizable, once.
int Arm64ModelVcpu::Finalize(int feature) {
  int ret;
  if (Inject("KVM_ARM_VCPU_FINALIZE", &ret)) return ret;
  if (!initialized_) return -ENOEXEC;
  if (feature != static_cast<int>(a::kFeatureSve) || !HasSve()) return -EINVAL;
  if (finalized_) return -EPERM;
  finalized_ = true;
  return 0;
}

// guest.c kvm_arm_copy_reg_indices(): core, SVE, firmware, timer, then the
// system registers (with the demux ones); refused until SVE is finalized.
int Arm64ModelVcpu::GetRegList(uint64_t* n, uint64_t* ids) {
  int ret;
  if (Inject("KVM_GET_REG_LIST", &ret)) return ret;
  if (!initialized_) return -ENOEXEC;
  if (HasSve() && !finalized_) return -EPERM;
  std::vector<uint64_t> list;
  auto add_class = [&](uint64_t coproc) {
    for (const auto& [id, v] : state_.regs) {
      if (a::Coproc(id) == coproc && !IsTimer(id)) list.push_back(id);
    }
  };
  add_class(a::kCore);
  add_class(a::kSve);
  add_class(a::kFw);
  add_class(a::kFwFeatBmap);
  list.push_back(a::kTimerCtl);
  list.push_back(a::kTimerCnt);
  list.push_back(a::kTimerCval);
  if (vm_->host_.ptimer) {
    list.push_back(a::kPtimerCtl);
    list.push_back(a::kPtimerCnt);
    list.push_back(a::kPtimerCval);
  }
  add_class(a::kDemux);
  add_class(a::kSysreg);
  const uint64_t room = *n;
  *n = list.size();
  if (room < list.size()) return -E2BIG;
  std::copy(list.begin(), list.end(), ids);
  return 0;
}

// guest.c kvm_arm_get_reg()/set_reg(), arch_timer.c kvm_arm_timer_get/set_reg().
int Arm64ModelVcpu::GetOneReg(const kvm_one_reg& reg) {
  int ret;
  if (Inject("KVM_GET_ONE_REG", &ret)) return ret;
  if (!initialized_) return -ENOEXEC;
  if ((reg.id & a::kRegArchMask) != a::kRegArm64) return -EINVAL;
  if (!reg.addr) return -EFAULT;
  void* out = reinterpret_cast<void*>(static_cast<uintptr_t>(reg.addr));
  const bool ptimer = vm_->host_.ptimer;
  if (IsTimer(reg.id)) {
    uint64_t v;
    if (reg.id == a::kTimerCtl) v = (state_.vctl & ~kCtlIstatus) | (vtimer_asserted() ? kCtlIstatus : 0);
    else if (reg.id == a::kTimerCnt) v = vcount();
    else if (reg.id == a::kTimerCval) v = state_.vcval;
    else if (!ptimer) return -ENOENT;
    else if (reg.id == a::kPtimerCtl) v = (state_.pctl & ~kCtlIstatus) | (ptimer_asserted() ? kCtlIstatus : 0);
    else if (reg.id == a::kPtimerCnt) v = vm_->phys_counter_ - vm_->poffset_;
    else v = state_.pcval;
    std::memcpy(out, &v, 8);
    return 0;
  }
  auto it = state_.regs.find(reg.id);
  if (it == state_.regs.end()) return -ENOENT;
  // sve_reg_to_region(): nothing but VLS before finalization.
  if (a::Coproc(reg.id) == a::kSve && reg.id != a::kRegSveVls && !finalized_) return -EPERM;
  std::memcpy(out, it->second.data(), it->second.size());
  return 0;
}

int Arm64ModelVcpu::SetOneReg(const kvm_one_reg& reg) {
  int ret;
  if (Inject("KVM_SET_ONE_REG", &ret)) return ret;
  if (!initialized_) return -ENOEXEC;
  if ((reg.id & a::kRegArchMask) != a::kRegArm64) return -EINVAL;
  if (!reg.addr) return -EFAULT;
  const void* in = reinterpret_cast<const void*>(static_cast<uintptr_t>(reg.addr));
  if (IsTimer(reg.id)) {
    uint64_t v;
    std::memcpy(&v, in, 8);
    const bool fixed = vm_->has_counter_offset_;  // KVM_ARM_SET_COUNTER_OFFSET wins
    // CVAL and CTL program the timer against the offset in force now; CNT
    // moves the offset (VM-wide) and nothing else.
    if (reg.id == a::kTimerCtl) { state_.vctl = v & ~kCtlIstatus; vtimer_offset_ = vm_->voffset_; }  // ISTATUS is read-only
    else if (reg.id == a::kTimerCnt) { if (!fixed) vm_->voffset_ = vm_->phys_counter_ - v; }
    else if (reg.id == a::kTimerCval) { state_.vcval = v; vtimer_offset_ = vm_->voffset_; }
    else if (!vm_->host_.ptimer) return -ENOENT;
    else if (reg.id == a::kPtimerCtl) { state_.pctl = v & ~kCtlIstatus; ptimer_offset_ = vm_->poffset_; }
    else if (reg.id == a::kPtimerCnt) { if (!fixed) vm_->poffset_ = vm_->phys_counter_ - v; }
    else { state_.pcval = v; ptimer_offset_ = vm_->poffset_; }
    return 0;
  }
  auto it = state_.regs.find(reg.id);
  if (it == state_.regs.end()) return -ENOENT;
  std::vector<uint8_t> bytes(static_cast<const uint8_t*>(in), static_cast<const uint8_t*>(in) + it->second.size());
  uint64_t v = 0;
  if (bytes.size() == 8) std::memcpy(&v, bytes.data(), 8);
  if (a::Coproc(reg.id) == a::kSve) {
    if (reg.id == a::kRegSveVls) {
      // set_sve_vls(): too late once finalized; only lengths the host has.
      if (finalized_) return -EPERM;
      uint64_t w0;
      std::memcpy(&w0, bytes.data(), 8);
      if (w0 & ~kSveVqMask || w0 == 0) return -EINVAL;
      for (size_t i = 8; i < bytes.size(); ++i) {
        if (bytes[i]) return -EINVAL;
      }
    } else if (!finalized_) {
      return -EPERM;
    }
  }
  if (reg.id == a::kFwPsciVersion) {
    // set_fw_reg(): PSCI 0.1 without the PSCI_0_2 feature; 0.2, 1.0 or 1.1 with it.
    const bool v02 = a::HasFeature(init_, a::kFeaturePsci02);
    if (v02 ? (v != 0x2 && v != 0x10000 && v != 0x10001) : v != 0) return -EINVAL;
  }
  if (reg.id == a::kFwSmcccWorkaround1 || reg.id == a::kFwSmcccWorkaround2 ||
      reg.id == a::kFwSmcccWorkaround3) {
    if (v > vm_->host_.workaround_level) return -EINVAL;  // a state this host cannot give
  }
  if (a::Coproc(reg.id) == a::kFwFeatBmap && vm_->ran_ && v != Peek(reg.id)) return -EBUSY;
  it->second = std::move(bytes);
  return 0;
}

int Arm64ModelVcpu::GetMpState(kvm_mp_state* s) {
  int ret;
  if (Inject("KVM_GET_MP_STATE", &ret)) return ret;
  s->mp_state = state_.mp_state;
  return 0;
}

// arm.c kvm_arch_vcpu_ioctl_set_mpstate().
int Arm64ModelVcpu::SetMpState(const kvm_mp_state& s) {
  int ret;
  if (Inject("KVM_SET_MP_STATE", &ret)) return ret;
  if (s.mp_state != KVM_MP_STATE_RUNNABLE && s.mp_state != KVM_MP_STATE_STOPPED &&
      s.mp_state != KVM_MP_STATE_SUSPENDED)
    return -EINVAL;
  state_.mp_state = s.mp_state;
  return 0;
}

int Arm64ModelVcpu::GetEvents(a::VcpuEvents* e) {
  int ret;
  if (Inject("KVM_GET_VCPU_EVENTS", &ret)) return ret;
  *e = state_.events;
  e->exception.ext_dabt_pending = 0;  // set-only
  return 0;
}

// guest.c __kvm_arm_vcpu_set_events(): a syndrome needs RAS, and fits ISS.
int Arm64ModelVcpu::SetEvents(const a::VcpuEvents& e) {
  int ret;
  if (Inject("KVM_SET_VCPU_EVENTS", &ret)) return ret;
  for (uint32_t r : e.reserved) {
    if (r) return -EINVAL;
  }
  if (e.exception.serror_pending && e.exception.serror_has_esr) {
    if (!vm_->host_.ras) return -EINVAL;
    if (e.exception.serror_esr & ~0xffffffull) return -EINVAL;
  }
  state_.events = e;
  state_.events.exception.ext_dabt_pending = 0;
  return 0;
}

bool operator==(const Arm64ModelVcpu::State& x, const Arm64ModelVcpu::State& y) {
  return x.regs == y.regs && x.vctl == y.vctl && x.vcval == y.vcval && x.pctl == y.pctl &&
         x.pcval == y.pcval && x.mp_state == y.mp_state &&
         std::memcmp(&x.events, &y.events, sizeof x.events) == 0;
}

// ---------------------------------------------------------------- vGICv3

Arm64ModelGic::~Arm64ModelGic() {
  if (vm_->gic_ == this) vm_->gic_ = nullptr;
}

namespace {
// Set/clear register pairs: the clear register's offset is the set one's + 0x80.
bool ClearOf(uint32_t off, uint32_t* set) {
  if (!a::IsClearOffset(off)) return false;
  *set = off - 0x80;
  return true;
}
bool IsSetReg(uint32_t off) { return a::IsSetOffset(off); }
}  // namespace

int Arm64ModelGic::DistAccess(uint32_t off, uint32_t* val, bool write) {
  uint32_t set = off;
  const bool clear = ClearOf(off, &set);
  auto valid = a::DistRegOffsets(state_.nr_irqs);
  if (std::find(valid.begin(), valid.end(), set) == valid.end()) return -ENXIO;
  uint32_t& cell = state_.dist[set];
  if (!write) {
    *val = cell;
  } else if (clear) {
    cell &= ~*val;
  } else if (IsSetReg(set)) {
    cell |= *val;
  } else {
    cell = *val;
  }
  return 0;
}

// vgic-mmio-v3.c: PROPBASER/PENDBASER writes are ignored while LPIs are on;
// EnableLPIs only sticks when the VM has an ITS.
int Arm64ModelGic::RedistAccess(Cpu& cpu, uint32_t off, uint32_t* val, bool write) {
  uint32_t set = off;
  const bool clear = ClearOf(off, &set);
  auto valid = a::RedistRegOffsets();
  if (std::find(valid.begin(), valid.end(), set) == valid.end()) return -ENXIO;
  uint32_t& cell = cpu.redist[set];
  if (!write) {
    *val = cell;
    return 0;
  }
  const bool lpis_on = cpu.redist.count(0) && (cpu.redist[0] & 1);
  if (set >= 0x70 && set < 0x80) {
    if (!lpis_on) cell = *val;
  } else if (set == 0) {
    cell = vm_->its_ ? *val : (*val & ~1u);
  } else if (clear) {
    cell &= ~*val;
  } else if (IsSetReg(set)) {
    cell |= *val;
  } else {
    cell = *val;
  }
  return 0;
}

int Arm64ModelGic::Access(const kvm_device_attr& attr, bool write) {
  void* p = reinterpret_cast<void*>(static_cast<uintptr_t>(attr.addr));
  if (!p && attr.group != a::kGrpCtrl) return -EFAULT;
  switch (attr.group) {
    case a::kGrpAddr: {
      // vgic-kvm-device.c kvm_vgic_addr(): 64K aligned, set once.
      if (attr.attr != a::kAddrDist && attr.attr != a::kAddrRedist) return -ENODEV;
      uint64_t& slot = attr.attr == a::kAddrDist ? state_.dist_base : state_.redist_base;
      if (!write) {
        std::memcpy(p, &slot, 8);
        return 0;
      }
      uint64_t v;
      std::memcpy(&v, p, 8);
      if (v & 0xffff) return -EINVAL;
      if (slot != ~0ull) return -EEXIST;
      slot = v;
      return 0;
    }
    case a::kGrpNrIrqs: {
      if (!write) {
        std::memcpy(p, &state_.nr_irqs, 4);
        return 0;
      }
      uint32_t v;
      std::memcpy(&v, p, 4);
      if (v < 64 || v > 1020 + 4 || v % 32) return -EINVAL;
      if (initialized_ || state_.nr_irqs) return -EBUSY;
      state_.nr_irqs = v;
      return 0;
    }
    case a::kGrpCtrl:
      if (!write) return -ENXIO;
      if (attr.attr == a::kCtrlInit) {
        if (!initialized_ && state_.nr_irqs == 0) state_.nr_irqs = 256;  // VGIC_NR_IRQS_LEGACY
        initialized_ = true;
        return 0;
      }
      if (attr.attr == a::kCtrlSavePendingTables) {
        if (!initialized_) return -EBUSY;
        state_.pending_saved = true;
        return 0;
      }
      return -ENXIO;
    default: break;
  }
  // Register groups: only on an initialized vGIC with no vCPU running.
  if (attr.group != a::kGrpDistRegs && attr.group != a::kGrpRedistRegs &&
      attr.group != a::kGrpCpuSysregs && attr.group != a::kGrpLevelInfo)
    return -ENXIO;
  if (!initialized_) return -EBUSY;
  const uint64_t mpidr = attr.attr >> a::kAttrMpidrShift;
  const uint32_t low = static_cast<uint32_t>(attr.attr & a::kAttrOffsetMask);
  if (attr.group == a::kGrpDistRegs) {
    uint32_t v = 0;
    if (write) std::memcpy(&v, p, 4);
    int r = DistAccess(low, &v, write);
    if (r == 0 && !write) std::memcpy(p, &v, 4);
    return r;
  }
  if (!vm_->VcpuByMpidrAttr(mpidr)) return -EINVAL;
  Cpu& cpu = state_.cpus[mpidr];
  if (attr.group == a::kGrpRedistRegs) {
    uint32_t v = 0;
    if (write) std::memcpy(&v, p, 4);
    int r = RedistAccess(cpu, low, &v, write);
    if (r == 0 && !write) std::memcpy(p, &v, 4);
    return r;
  }
  if (attr.group == a::kGrpCpuSysregs) {
    const uint64_t enc = attr.attr & a::kSysregEncodingMask;
    auto regs = a::CpuSysregEncodings();
    if (std::find(regs.begin(), regs.end(), enc) == regs.end()) return -ENXIO;
    // vgic-v3-sr/sys_regs: ICC_AP<n>R<m> beyond what the priority bits need do not exist.
    const unsigned max_apr = vm_->host_.pri_bits >= 7 ? 3 : vm_->host_.pri_bits == 6 ? 1 : 0;
    const unsigned crm = (enc >> 3) & 0xf, op2 = enc & 7, crn = (enc >> 7) & 0xf;
    if (crn == 12 && (crm == 8 && op2 >= 4 ? op2 - 4 : crm == 9 ? op2 : 0) > max_apr) return -EINVAL;
    uint64_t& cell = cpu.sysregs[enc];
    if (!write) {
      std::memcpy(p, &cell, 8);
      return 0;
    }
    uint64_t v;
    std::memcpy(&v, p, 8);
    if (crn == 12 && crm == 12 && op2 == 4 && ((v >> 8) & 7) + 1 > vm_->host_.pri_bits) {
      return -EINVAL;  // ICC_CTLR_EL1.PRIbits: more priority bits than this host's GIC has
    }
    cell = v;
    return 0;
  }
  // LEVEL_INFO: line levels of 32 interrupts from a multiple of 32.
  if (((low >> a::kLevelInfoShift)) != a::kLevelInfoLineLevel) return -EINVAL;
  const uint32_t intid = low & a::kLevelIntidMask;
  if (intid % 32 || intid >= state_.nr_irqs) return -EINVAL;
  uint32_t& cell = intid == 0 ? cpu.ppi_levels : state_.spi_levels[intid];
  if (write) std::memcpy(&cell, p, 4);
  else std::memcpy(p, &cell, 4);
  return 0;
}

int Arm64ModelGic::SetAttr(const kvm_device_attr& attr) {
  int ret;
  if (vm_->Inject("KVM_SET_DEVICE_ATTR", &ret)) return ret;
  return Access(attr, true);
}
int Arm64ModelGic::GetAttr(const kvm_device_attr& attr) {
  int ret;
  if (vm_->Inject("KVM_GET_DEVICE_ATTR", &ret)) return ret;
  return Access(attr, false);
}
int Arm64ModelGic::HasAttr(const kvm_device_attr& attr) {
  if (attr.group == a::kGrpCpuSysregs) {
    const uint64_t enc = attr.attr & a::kSysregEncodingMask;
    auto regs = a::CpuSysregEncodings();
    if (std::find(regs.begin(), regs.end(), enc) == regs.end()) return -ENXIO;
    const unsigned max_apr = vm_->host_.pri_bits >= 7 ? 3 : vm_->host_.pri_bits == 6 ? 1 : 0;
    const unsigned crm = (enc >> 3) & 0xf, op2 = enc & 7, crn = (enc >> 7) & 0xf;
    if (crn == 12 && (crm == 8 && op2 >= 4 ? op2 - 4 : crm == 9 ? op2 : 0) > max_apr) return -ENXIO;
    return 0;
  }
  return attr.group <= a::kGrpLevelInfo && attr.group != 2 ? 0 : -ENXIO;
}

// ---------------------------------------------------------------- ITS

Arm64ModelIts::~Arm64ModelIts() {
  if (vm_->its_ == this) vm_->its_ = nullptr;
}

// vgic-its.c: the device table (BASER0) holds, in this model, a count and
// 16-byte entries, little-endian; the real ABI spreads translations over the
// device, ITT and collection tables, which the model does not need to tell apart.
// The tables in guest memory follow Documentation/virt/kvm/devices/
// arm-vgic-its.rst, "ITS Table ABI REV0": 8-byte little-endian entries; the
// device table (GITS_BASER0) indexed by DeviceID, each device's ITT by
// EventID, the collection table (GITS_BASER1) in no particular order.
//   DTE: V[63] | next[62:49] | ITT_addr[48:5] (address bits 51:8) | Size[4:0]
//   ITE: next[63:48] | pINTID[47:16] | ICID[15:0]   (pINTID 0: invalid)
//   CTE: V[63] | RES0[62:52] | RDBase[51:16] | ICID[15:0]
// "next" is the offset to the next valid entry's index, 0 on the last one.
namespace {

uint64_t TableBytes(uint64_t baser) {
  // GITS_BASER.Size: pages - 1; Page_Size[9:8]: 4K, 16K, 64K.
  static const uint64_t kPage[] = {4096, 16384, 65536, 65536};
  return ((baser & 0xff) + 1) * kPage[(baser >> 8) & 3];
}

}  // namespace

int Arm64ModelIts::SaveTables() {
  auto& mem = vm_->memory_;
  auto put = [&](uint64_t at, uint64_t v) {
    if (at + 8 > mem.size()) return false;
    for (int i = 0; i < 8; ++i) mem[at + i] = static_cast<uint8_t>(v >> (8 * i));
    return true;
  };
  const uint64_t dt = state_.regs[0x100], ct = state_.regs[0x108];
  if (dt & kGitsBaserValid) {
    const uint64_t base = dt & kTableAddrMask, bytes = TableBytes(dt);
    for (auto it = state_.devices.begin(); it != state_.devices.end(); ++it) {
      const auto& [id, d] = *it;
      if (8ull * id >= bytes) return -EINVAL;
      auto nx = std::next(it);
      const uint64_t next = nx == state_.devices.end() ? 0 : std::min<uint64_t>(nx->first - id, (1u << 14) - 1);
      const uint64_t dte = kGitsBaserValid | next << 49 | ((d.itt_addr >> 8) << 5) | (d.size & 0x1f);
      if (!put(base + 8ull * id, dte)) return -EFAULT;
      // This device's ITT, by EventID.
      std::vector<const Ite*> ites;
      for (const Ite& e : state_.translations) {
        if (e.device == id) ites.push_back(&e);
      }
      std::sort(ites.begin(), ites.end(), [](const Ite* a, const Ite* b) { return a->event < b->event; });
      for (size_t i = 0; i < ites.size(); ++i) {
        const uint64_t inext = i + 1 == ites.size() ? 0 : std::min<uint64_t>(ites[i + 1]->event - ites[i]->event, 0xffff);
        const uint64_t ite = inext << 48 | uint64_t{ites[i]->lpi} << 16 | (ites[i]->collection & 0xffff);
        if (!put(d.itt_addr + 8ull * ites[i]->event, ite)) return -EFAULT;
      }
    }
  }
  if (ct & kGitsBaserValid) {
    const uint64_t base = ct & kTableAddrMask, bytes = TableBytes(ct);
    uint64_t at = base;
    for (const auto& [icid, rdbase] : state_.collections) {
      if (at + 8 > base + bytes) return -ENOSPC;
      if (!put(at, kGitsBaserValid | (rdbase & 0xfffffffffull) << 16 | icid)) return -EFAULT;
      at += 8;
    }
    // An invalid entry ends the list where the table has room for one.
    if (at + 8 <= base + bytes && !put(at, 0)) return -EFAULT;
  }
  return 0;
}

int Arm64ModelIts::RestoreTables() {
  state_.devices.clear();
  state_.collections.clear();
  state_.translations.clear();
  const auto& mem = vm_->memory_;
  auto get = [&](uint64_t at, uint64_t* v) {
    if (at + 8 > mem.size()) return false;
    *v = 0;
    for (int i = 0; i < 8; ++i) *v |= uint64_t{mem[at + i]} << (8 * i);
    return true;
  };
  const uint64_t dt = state_.regs[0x100], ct = state_.regs[0x108];
  if (ct & kGitsBaserValid) {
    const uint64_t base = ct & kTableAddrMask, bytes = TableBytes(ct);
    for (uint64_t at = base; at < base + bytes; at += 8) {
      uint64_t cte;
      if (!get(at, &cte)) return -EFAULT;
      if (!(cte & kGitsBaserValid)) break;
      const uint64_t rdbase = (cte >> 16) & 0xfffffffffull;
      if (rdbase >= vm_->vcpus_.size()) return -EINVAL;
      state_.collections[static_cast<uint32_t>(cte & 0xffff)] = rdbase;
    }
  }
  if (dt & kGitsBaserValid) {
    const uint64_t base = dt & kTableAddrMask, bytes = TableBytes(dt);
    for (uint64_t id = 0; 8 * id < bytes;) {
      uint64_t dte;
      if (!get(base + 8 * id, &dte)) return -EFAULT;
      if (!(dte & kGitsBaserValid)) {
        ++id;
        continue;
      }
      const Dte d{((dte >> 5) & ((1ull << 44) - 1)) << 8, static_cast<uint32_t>(dte & 0x1f)};
      state_.devices[static_cast<uint32_t>(id)] = d;
      const uint64_t events = 1ull << (d.size + 1);
      for (uint64_t ev = 0; ev < events;) {
        uint64_t ite;
        if (!get(d.itt_addr + 8 * ev, &ite)) return -EFAULT;
        const uint32_t lpi = static_cast<uint32_t>(ite >> 16);
        if (lpi == 0) {
          ++ev;
          continue;
        }
        const uint32_t icid = static_cast<uint32_t>(ite & 0xffff);
        if (!state_.collections.count(icid)) return -EINVAL;
        state_.translations.push_back({static_cast<uint32_t>(id), static_cast<uint32_t>(ev), lpi, icid});
        const uint64_t next = ite >> 48;
        if (next == 0) break;
        ev += next;
      }
      const uint64_t next = (dte >> 49) & 0x3fff;
      if (next == 0) break;
      id += next;
    }
  }
  return 0;
}

int Arm64ModelIts::SetAttr(const kvm_device_attr& attr) {
  int ret;
  if (vm_->Inject("KVM_SET_DEVICE_ATTR", &ret)) return ret;
  const void* p = reinterpret_cast<const void*>(static_cast<uintptr_t>(attr.addr));
  if (attr.group == a::kGrpAddr) {
    if (attr.attr != a::kAddrIts) return -ENODEV;
    if (!p) return -EFAULT;
    uint64_t v;
    std::memcpy(&v, p, 8);
    if (v & 0xffff) return -EINVAL;
    if (state_.base != ~0ull) return -EEXIST;
    state_.base = v;
    return 0;
  }
  if (attr.group == a::kGrpCtrl) {
    if (attr.attr == a::kCtrlInit) return 0;
    if (attr.attr == a::kCtrlItsSaveTables) return SaveTables();
    if (attr.attr == a::kCtrlItsRestoreTables) return RestoreTables();
    return -ENXIO;
  }
  if (attr.group != a::kGrpItsRegs) return -ENXIO;
  // vgic_its_attr_regs_access(): the ITS must have its base address.
  if (state_.base == ~0ull) return -ENXIO;
  const uint32_t off = static_cast<uint32_t>(attr.attr);
  auto offs = a::ItsRegOffsets();
  if (std::find(offs.begin(), offs.end(), off) == offs.end()) return -ENXIO;
  if (!p) return -EFAULT;
  uint64_t v;
  std::memcpy(&v, p, 8);
  const bool on = enabled();
  switch (off) {
    case 0x4:  // IIDR: only ABI revision 0 is known
      if ((v >> 12) & 0xf) return -EINVAL;
      break;
    case 0x80:  // CBASER: ignored while enabled; resets the queue pointers
      if (on) return 0;
      state_.regs[0x90] = 0;
      state_.regs[0x88] = 0;
      break;
    case 0x90:  // CREADR: only while disabled
      if (on) return -EBUSY;
      break;
    case 0x0:  // CTLR: Enabled only sticks with valid tables and queue
      if ((v & 1) && !on &&
          !((state_.regs[0x100] & kGitsBaserValid) && (state_.regs[0x108] & kGitsBaserValid) &&
            (state_.regs[0x80] & kGitsBaserValid)))
        v &= ~1ull;
      break;
    default:
      if (off >= 0x100 && on) return 0;  // BASER<n>: ignored while enabled
      break;
  }
  state_.regs[off] = v;
  return 0;
}

int Arm64ModelIts::GetAttr(const kvm_device_attr& attr) {
  int ret;
  if (vm_->Inject("KVM_GET_DEVICE_ATTR", &ret)) return ret;
  void* p = reinterpret_cast<void*>(static_cast<uintptr_t>(attr.addr));
  if (!p) return -EFAULT;
  if (attr.group == a::kGrpAddr) {
    if (attr.attr != a::kAddrIts) return -ENODEV;
    std::memcpy(p, &state_.base, 8);
    return 0;
  }
  if (attr.group != a::kGrpItsRegs) return -ENXIO;
  if (state_.base == ~0ull) return -ENXIO;
  const uint32_t off = static_cast<uint32_t>(attr.attr);
  auto offs = a::ItsRegOffsets();
  if (std::find(offs.begin(), offs.end(), off) == offs.end()) return -ENXIO;
  uint64_t v = state_.regs[off];
  std::memcpy(p, &v, 8);
  return 0;
}

int Arm64ModelIts::HasAttr(const kvm_device_attr& attr) {
  return attr.group == a::kGrpAddr || attr.group == a::kGrpCtrl || attr.group == a::kGrpItsRegs ? 0 : -ENXIO;
}

}  // namespace vmsnap::kvm::model
