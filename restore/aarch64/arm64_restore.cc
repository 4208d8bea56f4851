// SPDX-License-Identifier: MIT
// aarch64 restore: see arm64_restore.h. The order, with the reason for each
// step, is in docs/state-coverage.md ("aarch64"); each constraint is repeated
// where it is honoured.
#include "restore/aarch64/arm64_restore.h"

#include "kvm/aarch64/reg_groups.h"

#include <bit>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_set>
#include <vector>

namespace vmsnap::restore::aarch64 {
namespace {

std::string IdHex(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(id));
  return buf;
}

Status SetReg(ka::Vcpu& vcpu, uint64_t id, const void* value, const std::string& name) {
  kvm_one_reg r{id, reinterpret_cast<uintptr_t>(value)};
  return ka::IoctlStatus(ka::RetryEintr([&] { return vcpu.SetOneReg(r); }), "KVM_SET_ONE_REG " + name);
}
Status SetU64(ka::Vcpu& vcpu, uint64_t id, uint64_t v, const std::string& name) {
  return SetReg(vcpu, id, &v, name);
}
Status SetU32(ka::Vcpu& vcpu, uint64_t id, uint32_t v, const std::string& name) {
  return SetReg(vcpu, id, &v, name);
}

Status SetAttr(ka::Device& dev, uint32_t group, uint64_t attr, const void* value, const std::string& what) {
  kvm_device_attr a{};
  a.group = group;
  a.attr = attr;
  a.addr = reinterpret_cast<uintptr_t>(value);
  return ka::IoctlStatus(ka::RetryEintr([&] { return dev.SetAttr(a); }), "KVM_SET_DEVICE_ATTR " + what);
}

// The restore side of the scalar registers of kvm/aarch64/reg_groups.h (the
// capture side is SetField in capture/aarch64/arm64_capture.cc).
uint64_t FieldValue(schema::aarch64::Core::Reader core, schema::aarch64::Fp::Reader fp,
                    schema::aarch64::Timer::Reader t, ka::RegField f) {
  switch (f) {
    case ka::RegField::kSpEl0: return core.getSpEl0();
    case ka::RegField::kPc: return core.getPc();
    case ka::RegField::kPstate: return core.getPstate();
    case ka::RegField::kSpEl1: return core.getSpEl1();
    case ka::RegField::kElrEl1: return core.getElrEl1();
    case ka::RegField::kFpsr: return fp.getFpsr();
    case ka::RegField::kFpcr: return fp.getFpcr();
    case ka::RegField::kCnt: return t.getCnt();
    case ka::RegField::kCval: return t.getCval();
    case ka::RegField::kCtl: return t.getCtl();
    case ka::RegField::kPcnt: return t.getPcnt();
    case ka::RegField::kPcval: return t.getPcval();
    case ka::RegField::kPctl: return t.getPctl();
  }
  return 0;
}

Status Need(size_t have, size_t want, const char* what) {
  if (have == want) return Status::Ok();
  return Status::Corruption(std::string("aarch64 vCPU ") + what + " has " + std::to_string(have) +
                            " entries, expected " + std::to_string(want));
}

}  // namespace

Status InitVcpu(ka::Vcpu& vcpu, schema::aarch64::Vcpu::Reader st) {
  ka::VcpuInit init{};
  init.target = st.getInit().getTarget();
  auto f = st.getInit().getFeatures();
  if (f.size() > 7) return Status::Corruption("aarch64 vCPU init has " + std::to_string(f.size()) + " feature words");
  for (unsigned i = 0; i < f.size(); ++i) init.features[i] = f[i];
  // The register file (and with it every ONE_REG) exists only after INIT.
  VMSNAP_RETURN_IF_ERROR(ka::IoctlStatus(ka::RetryEintr([&] { return vcpu.Init(init); }), "KVM_ARM_VCPU_INIT"));
  if (!ka::HasFeature(init, ka::kFeatureSve)) return Status::Ok();
  // Vector lengths before FINALIZE (EPERM after); every other SVE register
  // and the register list only after it (EPERM before).
  auto vls = st.getSve().getVls();
  VMSNAP_RETURN_IF_ERROR(Need(vls.size(), 8, "sve.vls"));
  uint64_t words[8];
  for (unsigned i = 0; i < 8; ++i) words[i] = vls[i];
  VMSNAP_RETURN_IF_ERROR(SetReg(vcpu, ka::kRegSveVls, words, "KVM_REG_ARM64_SVE_VLS"));
  return ka::IoctlStatus(ka::RetryEintr([&] { return vcpu.Finalize(static_cast<int>(ka::kFeatureSve)); }),
                         "KVM_ARM_VCPU_FINALIZE(SVE)");
}

Status CheckRegList(ka::Vcpu& vcpu, schema::aarch64::Vcpu::Reader st) {
  uint64_t n = 0;
  int rc = ka::RetryEintr([&] { return vcpu.GetRegList(&n, nullptr); });
  if (rc != -E2BIG && rc < 0) return ka::IoctlStatus(rc, "KVM_GET_REG_LIST");
  std::vector<uint64_t> ids(n);
  VMSNAP_RETURN_IF_ERROR(ka::IoctlStatus(ka::RetryEintr([&] {
    uint64_t room = ids.size();
    int r = vcpu.GetRegList(&room, ids.data());
    if (r >= 0) ids.resize(room);
    return r;
  }), "KVM_GET_REG_LIST"));
  std::unordered_set<uint64_t> have(ids.begin(), ids.end());
  std::string missing;
  size_t count = 0;
  for (uint64_t id : st.getRegList()) {
    if (have.count(id)) continue;
    if (count++ < 16) missing += (missing.empty() ? "" : ", ") + IdHex(id);
  }
  if (count == 0) return Status::Ok();
  if (count > 16) missing += ", ...";
  return Status::Unsupported("this host's KVM lacks " + std::to_string(count) + " register" +
                             (count == 1 ? "" : "s") + " the snapshot holds: " + missing);
}

Status RestoreCounterOffset(ka::Vm& vm, schema::aarch64::Vm::Reader st) {
  if (!st.getHasCounterOffset()) return Status::Ok();
  // Before any vCPU runs (EBUSY after); from now on TIMER_CNT writes are no-ops.
  ka::CounterOffset off{st.getCounterOffset(), 0};
  return ka::IoctlStatus(ka::RetryEintr([&] { return vm.SetCounterOffset(off); }), "KVM_ARM_SET_COUNTER_OFFSET");
}

Status RestoreVcpuRegs(ka::Vcpu& vcpu, schema::aarch64::Vcpu::Reader st) {
  auto core = st.getCore();
  auto fp = st.getFp();
  auto sve = st.getSve();
  auto t = st.getTimer();
  VMSNAP_RETURN_IF_ERROR(Need(core.getX().size(), 31, "core.x"));
  VMSNAP_RETURN_IF_ERROR(Need(core.getSpsr().size(), ka::kNrSpsr, "core.spsr"));
  auto put_field = [&](const ka::FieldReg& r) -> Status {
    const uint64_t v = FieldValue(core, fp, t, r.field);
    if (r.field == ka::RegField::kFpsr || r.field == ka::RegField::kFpcr)
      return SetU32(vcpu, r.id, static_cast<uint32_t>(v), r.name);
    return SetU64(vcpu, r.id, v, r.name);
  };
  auto put_wide = [&](uint64_t id, capnp::Data::Reader d, const std::string& name) -> Status {
    if (d.size() != ka::OneRegSize(id))
      return Status::Corruption("aarch64 " + name + " is " + std::to_string(d.size()) + " bytes, expected " +
                                std::to_string(ka::OneRegSize(id)));
    return SetReg(vcpu, id, d.begin(), name);
  };
  // Group by group in the shared order (kvm/aarch64/reg_groups.h); capture
  // files each register under the same groups.
  for (ka::RegGroup group : ka::kRestoreOrder) {
    switch (group) {
      case ka::RegGroup::kCoreX:
        for (unsigned i = 0; i < 31; ++i)
          VMSNAP_RETURN_IF_ERROR(SetU64(vcpu, ka::XReg(i), core.getX()[i], "X" + std::to_string(i)));
        break;
      case ka::RegGroup::kCoreScalar:
        for (const ka::FieldReg& r : ka::kCoreScalars) VMSNAP_RETURN_IF_ERROR(put_field(r));
        break;
      case ka::RegGroup::kSpsr:
        for (unsigned i = 0; i < ka::kNrSpsr; ++i)
          VMSNAP_RETURN_IF_ERROR(SetU64(vcpu, ka::SpsrReg(i), core.getSpsr()[i], "SPSR" + std::to_string(i)));
        break;
      case ka::RegGroup::kV:
        for (unsigned i = 0; i < fp.getV().size() && i < 32; ++i) {
          auto d = fp.getV()[i];
          if (d.size() != 16) return Status::Corruption("aarch64 V" + std::to_string(i) + " is not 16 bytes");
          uint8_t b[16];
          for (int k = 0; k < 16; ++k) b[k] = std::endian::native == std::endian::little ? d[k] : d[15 - k];
          VMSNAP_RETURN_IF_ERROR(SetReg(vcpu, ka::VReg(i), b, "V" + std::to_string(i)));
        }
        break;
      case ka::RegGroup::kFpScalar:
        for (const ka::FieldReg& r : ka::kFpScalars) VMSNAP_RETURN_IF_ERROR(put_field(r));
        break;
      case ka::RegGroup::kSveVls: break;  // InitVcpu, before FINALIZE
      case ka::RegGroup::kZ:
        for (unsigned i = 0; i < sve.getZ().size() && i < 32; ++i)
          VMSNAP_RETURN_IF_ERROR(put_wide(ka::ZReg(i), sve.getZ()[i], "Z" + std::to_string(i)));
        break;
      case ka::RegGroup::kP:
        for (unsigned i = 0; i < sve.getP().size() && i < 16; ++i)
          VMSNAP_RETURN_IF_ERROR(put_wide(ka::PReg(i), sve.getP()[i], "P" + std::to_string(i)));
        break;
      case ka::RegGroup::kFfr:
        if (sve.hasFfr()) VMSNAP_RETURN_IF_ERROR(put_wide(ka::kRegFfr, sve.getFfr(), "FFR"));
        break;
      case ka::RegGroup::kSysreg:
        for (auto r : st.getSysregs()) VMSNAP_RETURN_IF_ERROR(SetU64(vcpu, r.getId(), r.getValue(), IdHex(r.getId())));
        break;
      case ka::RegGroup::kFirmware:
        for (auto r : st.getFirmware()) VMSNAP_RETURN_IF_ERROR(SetU64(vcpu, r.getId(), r.getValue(), IdHex(r.getId())));
        break;
      case ka::RegGroup::kOther:
        for (auto r : st.getOtherRegs()) {
          auto d = r.getData();
          const size_t size = ka::OneRegSize(r.getId());
          if (d.size() != size) return Status::Corruption("aarch64 register " + IdHex(r.getId()) + " has the wrong size");
          std::vector<uint8_t> b(d.begin(), d.end());
          if (size <= 8) {  // stored little-endian; the kernel wants its number in host order
            uint64_t num = 0;
            for (size_t i = 0; i < size; ++i) num |= uint64_t{d[i]} << (8 * i);
            if (size == 8) std::memcpy(b.data(), &num, 8);
            else if (size == 4) { uint32_t v32 = static_cast<uint32_t>(num); std::memcpy(b.data(), &v32, 4); }
            else if (size == 2) { uint16_t v16 = static_cast<uint16_t>(num); std::memcpy(b.data(), &v16, 2); }
          }
          VMSNAP_RETURN_IF_ERROR(SetReg(vcpu, r.getId(), b.data(), IdHex(r.getId())));
        }
        break;
      case ka::RegGroup::kTimer:
        // CNT, CVAL, CTL for each timer: the table's order, and why, is in
        // reg_groups.h and docs/state-coverage.md.
        for (const ka::FieldReg& r : ka::kTimerRegs) {
          if (ka::IsPtimerField(r.field) && !t.getHasPtimer()) continue;
          VMSNAP_RETURN_IF_ERROR(put_field(r));
        }
        break;
    }
  }
  return Status::Ok();
}

Status CreateDevices(ka::Vm& vm, schema::aarch64::Vm::Reader st, Devices* out) {
  auto gic = st.getGic();
  if (!gic.getPresent()) return Status::Ok();
  VMSNAP_RETURN_IF_ERROR(ka::IoctlStatus(vm.CreateDevice(ka::kDevTypeVgicV3, &out->gic),
                                         "KVM_CREATE_DEVICE KVM_DEV_TYPE_ARM_VGIC_V3"));
  uint64_t dist = gic.getDistBase(), redist = gic.getRedistBase();
  uint32_t nr = gic.getNrIrqs();
  VMSNAP_RETURN_IF_ERROR(SetAttr(*out->gic, ka::kGrpAddr, ka::kAddrDist, &dist, "KVM_VGIC_V3_ADDR_TYPE_DIST"));
  VMSNAP_RETURN_IF_ERROR(SetAttr(*out->gic, ka::kGrpAddr, ka::kAddrRedist, &redist, "KVM_VGIC_V3_ADDR_TYPE_REDIST"));
  // NR_IRQS is refused once the vGIC is initialized (EBUSY).
  VMSNAP_RETURN_IF_ERROR(SetAttr(*out->gic, ka::kGrpNrIrqs, 0, &nr, "KVM_DEV_ARM_VGIC_GRP_NR_IRQS"));
  auto its = st.getIts();
  if (its.getPresent()) {
    // The ITS exists before the redistributors are restored: without one,
    // GICR_CTLR.EnableLPIs does not stick.
    VMSNAP_RETURN_IF_ERROR(ka::IoctlStatus(vm.CreateDevice(ka::kDevTypeIts, &out->its),
                                           "KVM_CREATE_DEVICE KVM_DEV_TYPE_ARM_VGIC_ITS"));
    uint64_t base = its.getBase();
    VMSNAP_RETURN_IF_ERROR(SetAttr(*out->its, ka::kGrpAddr, ka::kAddrIts, &base, "KVM_VGIC_ITS_ADDR_TYPE"));
    VMSNAP_RETURN_IF_ERROR(SetAttr(*out->its, ka::kGrpCtrl, ka::kCtrlInit, nullptr, "ITS KVM_DEV_ARM_VGIC_CTRL_INIT"));
  }
  return Status::Ok();
}

Status InitGic(ka::Device& gic) {
  return SetAttr(gic, ka::kGrpCtrl, ka::kCtrlInit, nullptr, "KVM_DEV_ARM_VGIC_CTRL_INIT");
}

Status RestoreGicState(ka::Device& gic, schema::aarch64::Gic::Reader st) {
  // Set/clear pairs: clear every bit first, so that the set register leaves
  // exactly the saved bits (a set register only ever adds).
  auto put32 = [&](uint32_t group, uint64_t attr, uint32_t v, const std::string& what) {
    return SetAttr(gic, group, attr, &v, what);
  };
  for (auto r : st.getDist()) {
    const uint32_t off = r.getOffset();
    if (ka::IsSetOffset(off))
      VMSNAP_RETURN_IF_ERROR(put32(ka::kGrpDistRegs, off + 0x80, ~0u, "GICD+" + IdHex(off + 0x80)));
    VMSNAP_RETURN_IF_ERROR(put32(ka::kGrpDistRegs, off, r.getValue(), "GICD+" + IdHex(off)));
  }
  unsigned c = 0;
  for (auto cpu : st.getCpus()) {
    const uint64_t aff = ka::MpidrToAttr(cpu.getMpidr()) << ka::kAttrMpidrShift;
    const std::string who = " of vCPU " + std::to_string(c);
    // PROPBASER/PENDBASER come before GICR_CTLR in the list: EnableLPIs freezes them.
    for (auto r : cpu.getRedist()) {
      const uint32_t off = r.getOffset();
      if (ka::IsSetOffset(off))
        VMSNAP_RETURN_IF_ERROR(put32(ka::kGrpRedistRegs, aff | (off + 0x80), ~0u, "GICR+" + IdHex(off + 0x80) + who));
      VMSNAP_RETURN_IF_ERROR(put32(ka::kGrpRedistRegs, aff | off, r.getValue(), "GICR+" + IdHex(off) + who));
    }
    // The CPU interface after its redistributor, ICC_SRE/ICC_CTLR first.
    for (auto r : cpu.getSysregs()) {
      uint64_t v = r.getValue();
      VMSNAP_RETURN_IF_ERROR(SetAttr(gic, ka::kGrpCpuSysregs, aff | (r.getId() & ka::kSysregEncodingMask), &v,
                                     "ICC " + IdHex(r.getId()) + who));
    }
    for (auto l : cpu.getLevels()) {
      VMSNAP_RETURN_IF_ERROR(put32(ka::kGrpLevelInfo,
                                   aff | (ka::kLevelInfoLineLevel << ka::kLevelInfoShift) | l.getIntid(),
                                   l.getBits(), "LEVEL_INFO " + std::to_string(l.getIntid()) + who));
    }
    ++c;
  }
  return Status::Ok();
}

Status RestoreVcpuEvents(ka::Vcpu& vcpu, schema::aarch64::Vcpu::Reader st) {
  kvm_mp_state mp{st.getMpState()};
  VMSNAP_RETURN_IF_ERROR(ka::IoctlStatus(ka::RetryEintr([&] { return vcpu.SetMpState(mp); }), "KVM_SET_MP_STATE"));
  auto e = st.getEvents();
  ka::VcpuEvents ev{};
  ev.exception.serror_pending = e.getSerrorPending();
  ev.exception.serror_has_esr = e.getSerrorHasEsr();
  ev.exception.serror_esr = e.getSerrorEsr();
  return ka::IoctlStatus(ka::RetryEintr([&] { return vcpu.SetEvents(ev); }), "KVM_SET_VCPU_EVENTS");
}

Status RestoreIts(ka::Device& its, schema::aarch64::Its::Reader st) {
  // arm-vgic-its.rst: GITS_CBASER first (writing it resets CREADR/CWRITER),
  // the other registers except GITS_CTLR, the tables (read from guest memory,
  // so after it is loaded), and GITS_CTLR last: once the ITS is enabled the
  // BASERs and CBASER ignore writes and CREADR refuses them.
  std::vector<std::pair<uint32_t, uint64_t>> regs;
  for (auto r : st.getRegs()) regs.push_back({r.getOffset(), r.getValue()});
  auto put = [&](uint32_t off, uint64_t v) { return SetAttr(its, ka::kGrpItsRegs, off, &v, "GITS+" + IdHex(off)); };
  for (auto& [off, v] : regs) {
    if (off == 0x80) VMSNAP_RETURN_IF_ERROR(put(off, v));
  }
  for (auto& [off, v] : regs) {
    if (off != 0x80 && off != 0x0) VMSNAP_RETURN_IF_ERROR(put(off, v));
  }
  if (st.getTablesSaved())
    VMSNAP_RETURN_IF_ERROR(SetAttr(its, ka::kGrpCtrl, ka::kCtrlItsRestoreTables, nullptr, "KVM_DEV_ARM_ITS_RESTORE_TABLES"));
  for (auto& [off, v] : regs) {
    if (off == 0x0) VMSNAP_RETURN_IF_ERROR(put(off, v));
  }
  return Status::Ok();
}

namespace {

Status CheckManifest(schema::Manifest::Reader m, size_t vcpus) {
  if (m.getArch() != schema::Arch::AARCH64)
    return Status::WrongArch("snapshot is not for aarch64 (wrong architecture)");
  if (!m.getVm().isAarch64()) return Status::Corruption("aarch64 snapshot without aarch64 VM state");
  if (m.getVcpus().size() != vcpus)
    return Status::InvalidArgument("snapshot has " + std::to_string(m.getVcpus().size()) + " vCPUs, the VM has " +
                                   std::to_string(vcpus));
  return Status::Ok();
}

}  // namespace

Status Arm64Restorer::ForEachVcpu(schema::Manifest::Reader m,
                                  Status (*step)(ka::Vcpu&, schema::aarch64::Vcpu::Reader)) {
  VMSNAP_RETURN_IF_ERROR(CheckManifest(m, vcpus_.size()));
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    auto v = m.getVcpus()[static_cast<unsigned>(i)];
    if (!v.isAarch64()) return Status::Corruption("vCPU " + std::to_string(i) + " has no aarch64 state");
    Status s = step(*vcpus_[i], v.getAarch64());
    if (!s.ok()) return s.Context("vCPU " + std::to_string(i)).Context("aarch64 restore");
  }
  return Status::Ok();
}

Status Arm64Restorer::RestoreVmConfig(schema::Manifest::Reader m) {
  if (m.getArch() != schema::Arch::AARCH64)
    return Status::WrongArch("snapshot is not for aarch64 (wrong architecture)");
  if (!m.getVm().isAarch64()) return Status::Corruption("aarch64 snapshot without aarch64 VM state");
  // 1: no vCPU exists yet, so none can have run (EBUSY after).
  return RestoreCounterOffset(vm_, m.getVm().getAarch64()).Context("aarch64 restore");
}

Status Arm64Restorer::CheckVcpus(schema::Manifest::Reader m) {
  // 2-3 on every vCPU, then 4: the list exists only after INIT (and FINALIZE).
  VMSNAP_RETURN_IF_ERROR(ForEachVcpu(m, InitVcpu));
  return ForEachVcpu(m, CheckRegList);
}

Status Arm64Restorer::RestoreState(schema::Manifest::Reader m) {
  VMSNAP_RETURN_IF_ERROR(ForEachVcpu(m, RestoreVcpuRegs));
  auto vm_state = m.getVm().getAarch64();
  // 6-7: every vCPU exists and is initialized (KVM_CREATE_VCPU fails once
  // the vGIC is initialized, and its init sizes the redistributors by them).
  VMSNAP_RETURN_IF_ERROR(CreateDevices(vm_, vm_state, &devices_).Context("aarch64 restore"));
  if (devices_.gic) {
    VMSNAP_RETURN_IF_ERROR(InitGic(*devices_.gic).Context("aarch64 restore"));
    VMSNAP_RETURN_IF_ERROR(RestoreGicState(*devices_.gic, vm_state.getGic()).Context("vGICv3").Context("aarch64 restore"));
  }
  VMSNAP_RETURN_IF_ERROR(ForEachVcpu(m, RestoreVcpuEvents));
  // 13: the tables are read from guest memory, loaded before the vCPUs existed.
  if (devices_.its) VMSNAP_RETURN_IF_ERROR(RestoreIts(*devices_.its, vm_state.getIts()).Context("ITS").Context("aarch64 restore"));
  return Status::Ok();
}

Status RestoreManifest(ka::Vm& vm, std::span<ka::Vcpu* const> vcpus, schema::Manifest::Reader m, Devices* devices) {
  VMSNAP_RETURN_IF_ERROR(CheckManifest(m, vcpus.size()));
  Arm64Restorer r(vm);
  r.set_vcpus({vcpus.begin(), vcpus.end()});
  VMSNAP_RETURN_IF_ERROR(r.RestoreVmConfig(m));
  VMSNAP_RETURN_IF_ERROR(r.CheckVcpus(m));
  Status s = r.RestoreState(m);
  *devices = std::move(r.devices());
  return s;
}

}  // namespace vmsnap::restore::aarch64
