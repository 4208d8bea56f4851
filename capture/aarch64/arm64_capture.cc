// SPDX-License-Identifier: MIT
// aarch64 capture: see arm64_capture.h.
#include "capture/aarch64/arm64_capture.h"

#include "kvm/aarch64/reg_groups.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

namespace vmsnap::capture::aarch64 {
namespace ka = kvm::arm64;
namespace {

std::string IdHex(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(id));
  return buf;
}

// A register of up to 8 bytes as the number the kernel copied (host order).
uint64_t Number(const uint8_t* p, size_t size) {
  if (size == 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
  }
  if (size == 4) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  if (size == 2) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
  }
  return p[0];
}

// A V register (the kernel's __uint128_t, host order) as 16 bytes, least
// significant first, so the file is the same whatever host wrote it.
kj::Array<kj::byte> Le128(const uint8_t* p) {
  auto a = kj::heapArray<kj::byte>(16);
  for (int i = 0; i < 16; ++i) a[i] = std::endian::native == std::endian::little ? p[i] : p[15 - i];
  return a;
}

Status GetAttr(ka::Device& dev, uint32_t group, uint64_t attr, void* out, const std::string& what) {
  kvm_device_attr a{};
  a.group = group;
  a.attr = attr;
  a.addr = reinterpret_cast<uintptr_t>(out);
  return ka::IoctlStatus(ka::RetryEintr([&] { return dev.GetAttr(a); }), "KVM_GET_DEVICE_ATTR " + what);
}

Status SetCtrl(ka::Device& dev, uint64_t attr, const char* what) {
  kvm_device_attr a{};
  a.group = ka::kGrpCtrl;
  a.attr = attr;
  return ka::IoctlStatus(ka::RetryEintr([&] { return dev.SetAttr(a); }), std::string("KVM_SET_DEVICE_ATTR ") + what);
}

// The capture side of the scalar registers of kvm/aarch64/reg_groups.h (the
// restore side is FieldValue in restore/aarch64/arm64_restore.cc).
void SetField(schema::aarch64::Core::Builder core, schema::aarch64::Fp::Builder fp,
              schema::aarch64::Timer::Builder t, ka::RegField f, uint64_t v) {
  switch (f) {
    case ka::RegField::kSpEl0: core.setSpEl0(v); break;
    case ka::RegField::kPc: core.setPc(v); break;
    case ka::RegField::kPstate: core.setPstate(v); break;
    case ka::RegField::kSpEl1: core.setSpEl1(v); break;
    case ka::RegField::kElrEl1: core.setElrEl1(v); break;
    case ka::RegField::kFpsr: fp.setFpsr(static_cast<uint32_t>(v)); break;
    case ka::RegField::kFpcr: fp.setFpcr(static_cast<uint32_t>(v)); break;
    case ka::RegField::kCnt: t.setCnt(v); break;
    case ka::RegField::kCval: t.setCval(v); break;
    case ka::RegField::kCtl: t.setCtl(v); break;
    case ka::RegField::kPcnt: t.setHasPtimer(true); t.setPcnt(v); break;
    case ka::RegField::kPcval: t.setHasPtimer(true); t.setPcval(v); break;
    case ka::RegField::kPctl: t.setHasPtimer(true); t.setPctl(v); break;
  }
}

}  // namespace

Status CaptureVcpu(ka::Vcpu& vcpu, const ka::VcpuInit& init, schema::aarch64::Vcpu::Builder out) {
  // MP state first: PSCI power state decides whether the registers mean anything.
  kvm_mp_state mp{};
  VMSNAP_RETURN_IF_ERROR(
      ka::IoctlStatus(ka::RetryEintr([&] { return vcpu.GetMpState(&mp); }), "KVM_GET_MP_STATE"));
  out.setMpState(mp.mp_state);

  const bool sve = ka::HasFeature(init, ka::kFeatureSve);
  auto oi = out.initInit();
  oi.setTarget(init.target);
  auto feats = oi.initFeatures(7);
  for (unsigned i = 0; i < 7; ++i) feats.set(i, init.features[i]);
  oi.setSveFinalized(sve);

  // The register list: ask for the count, then the ids.
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
  auto list = out.initRegList(static_cast<unsigned>(ids.size()));
  for (size_t i = 0; i < ids.size(); ++i) list.set(static_cast<unsigned>(i), ids[i]);

  auto core = out.initCore();
  auto x = core.initX(31);
  auto spsr = core.initSpsr(ka::kNrSpsr);
  auto fp = out.initFp();
  auto v = fp.initV(sve ? 0 : 32);
  auto sve_out = out.initSve();
  auto vls = sve_out.initVls(sve ? 8 : 0);
  auto z = sve_out.initZ(sve ? 32 : 0);
  auto p = sve_out.initP(sve ? 16 : 0);
  auto timer = out.initTimer();
  std::vector<std::pair<uint64_t, uint64_t>> sysregs, fw;
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> other;

  std::vector<uint8_t> buf(256);
  for (uint64_t id : ids) {
    const size_t size = ka::OneRegSize(id);
    if (size > buf.size()) {
      return Status::Unsupported("register " + IdHex(id) + " is " + std::to_string(size) +
                                 " bytes; vmsnap reads at most 256");
    }
    std::fill(buf.begin(), buf.end(), 0);
    kvm_one_reg r{id, reinterpret_cast<uintptr_t>(buf.data())};
    Status s = ka::IoctlStatus(ka::RetryEintr([&] { return vcpu.GetOneReg(r); }),
                               "KVM_GET_ONE_REG " + IdHex(id));
    if (!s.ok()) return s;
    const uint64_t num = size <= 8 ? Number(buf.data(), size) : 0;
    // Where the register goes: the group description restore writes from.
    const ka::RegSlot slot = ka::ClassifyReg(id, sve);
    switch (slot.group) {
      case ka::RegGroup::kCoreX: x.set(slot.index, num); break;
      case ka::RegGroup::kCoreScalar:
      case ka::RegGroup::kFpScalar:
      case ka::RegGroup::kTimer: SetField(core, fp, timer, slot.field, num); break;
      case ka::RegGroup::kSpsr: spsr.set(slot.index, num); break;
      case ka::RegGroup::kV: v.set(slot.index, Le128(buf.data())); break;
      case ka::RegGroup::kSveVls:
        for (unsigned w = 0; w < 8; ++w) vls.set(w, Number(buf.data() + 8 * w, 8));
        break;
      case ka::RegGroup::kZ: z.set(slot.index, kj::arrayPtr(buf.data(), size)); break;
      case ka::RegGroup::kP: p.set(slot.index, kj::arrayPtr(buf.data(), size)); break;
      case ka::RegGroup::kFfr: sve_out.setFfr(kj::arrayPtr(buf.data(), size)); break;
      case ka::RegGroup::kSysreg: sysregs.push_back({id, num}); break;
      case ka::RegGroup::kFirmware: fw.push_back({id, num}); break;
      case ka::RegGroup::kOther: {
        // Stored little-endian up to 8 bytes, as the kernel's bytes beyond.
        std::vector<uint8_t> bytes(buf.begin(), buf.begin() + static_cast<long>(size));
        if (size <= 8) {
          for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(num >> (8 * i));
        }
        other.push_back({id, std::move(bytes)});
        break;
      }
    }
  }
  auto so = out.initSysregs(static_cast<unsigned>(sysregs.size()));
  for (size_t i = 0; i < sysregs.size(); ++i) {
    so[static_cast<unsigned>(i)].setId(sysregs[i].first);
    so[static_cast<unsigned>(i)].setValue(sysregs[i].second);
  }
  auto fo = out.initFirmware(static_cast<unsigned>(fw.size()));
  for (size_t i = 0; i < fw.size(); ++i) {
    fo[static_cast<unsigned>(i)].setId(fw[i].first);
    fo[static_cast<unsigned>(i)].setValue(fw[i].second);
  }
  auto oo = out.initOtherRegs(static_cast<unsigned>(other.size()));
  for (size_t i = 0; i < other.size(); ++i) {
    oo[static_cast<unsigned>(i)].setId(other[i].first);
    oo[static_cast<unsigned>(i)].setData(kj::arrayPtr(other[i].second.data(), other[i].second.size()));
  }

  ka::VcpuEvents ev{};
  VMSNAP_RETURN_IF_ERROR(
      ka::IoctlStatus(ka::RetryEintr([&] { return vcpu.GetEvents(&ev); }), "KVM_GET_VCPU_EVENTS"));
  auto eo = out.initEvents();
  eo.setSerrorPending(ev.exception.serror_pending != 0);
  eo.setSerrorHasEsr(ev.exception.serror_has_esr != 0);
  eo.setSerrorEsr(ev.exception.serror_esr);
  return Status::Ok();
}

Status CaptureGic(ka::Device& gic, std::span<ka::Vcpu* const> vcpus, schema::aarch64::Gic::Builder out) {
  out.setPresent(true);
  uint64_t dist = 0, redist = 0;
  uint32_t nr_irqs = 0;
  VMSNAP_RETURN_IF_ERROR(GetAttr(gic, ka::kGrpAddr, ka::kAddrDist, &dist, "KVM_VGIC_V3_ADDR_TYPE_DIST"));
  VMSNAP_RETURN_IF_ERROR(GetAttr(gic, ka::kGrpAddr, ka::kAddrRedist, &redist, "KVM_VGIC_V3_ADDR_TYPE_REDIST"));
  VMSNAP_RETURN_IF_ERROR(GetAttr(gic, ka::kGrpNrIrqs, 0, &nr_irqs, "KVM_DEV_ARM_VGIC_GRP_NR_IRQS"));
  out.setDistBase(dist);
  out.setRedistBase(redist);
  out.setNrIrqs(nr_irqs);
  // LPI pending bits go to the guest's pending tables, which are guest memory
  // saved after this.
  VMSNAP_RETURN_IF_ERROR(SetCtrl(gic, ka::kCtrlSavePendingTables, "KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES"));
  out.setPendingTablesSaved(true);

  auto offs = ka::DistRegOffsets(nr_irqs);
  auto d = out.initDist(static_cast<unsigned>(offs.size()));
  for (size_t i = 0; i < offs.size(); ++i) {
    uint32_t v = 0;
    VMSNAP_RETURN_IF_ERROR(GetAttr(gic, ka::kGrpDistRegs, offs[i], &v, "GICD+" + IdHex(offs[i])));
    d[static_cast<unsigned>(i)].setOffset(offs[i]);
    d[static_cast<unsigned>(i)].setValue(v);
  }
  auto roffs = ka::RedistRegOffsets();
  auto encs = ka::CpuSysregEncodings();
  auto cpus = out.initCpus(static_cast<unsigned>(vcpus.size()));
  for (size_t c = 0; c < vcpus.size(); ++c) {
    uint64_t mpidr = 0;
    kvm_one_reg r{ka::kRegMpidrEl1, reinterpret_cast<uintptr_t>(&mpidr)};
    VMSNAP_RETURN_IF_ERROR(ka::IoctlStatus(ka::RetryEintr([&] { return vcpus[c]->GetOneReg(r); }),
                                           "KVM_GET_ONE_REG MPIDR_EL1", " (vCPU " + std::to_string(c) + ")"));
    const uint64_t aff = ka::MpidrToAttr(mpidr) << ka::kAttrMpidrShift;
    auto cpu = cpus[static_cast<unsigned>(c)];
    cpu.setMpidr(mpidr);
    auto rr = cpu.initRedist(static_cast<unsigned>(roffs.size()));
    for (size_t i = 0; i < roffs.size(); ++i) {
      uint32_t v = 0;
      VMSNAP_RETURN_IF_ERROR(GetAttr(gic, ka::kGrpRedistRegs, aff | roffs[i], &v,
                                     "GICR+" + IdHex(roffs[i]) + " of vCPU " + std::to_string(c)));
      rr[static_cast<unsigned>(i)].setOffset(roffs[i]);
      rr[static_cast<unsigned>(i)].setValue(v);
    }
    // Only the ICC registers this GIC has (the AP<n>R count follows its priority bits).
    std::vector<std::pair<uint64_t, uint64_t>> icc;
    for (uint64_t enc : encs) {
      kvm_device_attr a{};
      a.group = ka::kGrpCpuSysregs;
      a.attr = aff | enc;
      if (gic.HasAttr(a) < 0) continue;
      uint64_t v = 0;
      VMSNAP_RETURN_IF_ERROR(GetAttr(gic, ka::kGrpCpuSysregs, aff | enc, &v,
                                     "ICC " + IdHex(enc) + " of vCPU " + std::to_string(c)));
      icc.push_back({enc, v});
    }
    auto so = cpu.initSysregs(static_cast<unsigned>(icc.size()));
    for (size_t i = 0; i < icc.size(); ++i) {
      so[static_cast<unsigned>(i)].setId(icc[i].first);
      so[static_cast<unsigned>(i)].setValue(icc[i].second);
    }
    // Line levels: the vCPU's own PPIs; the SPIs, shared, with vCPU 0.
    std::vector<uint32_t> intids{0};
    if (c == 0) {
      for (uint32_t i = 32; i < nr_irqs; i += 32) intids.push_back(i);
    }
    auto lv = cpu.initLevels(static_cast<unsigned>(intids.size()));
    for (size_t i = 0; i < intids.size(); ++i) {
      uint32_t bits = 0;
      VMSNAP_RETURN_IF_ERROR(GetAttr(gic, ka::kGrpLevelInfo,
                                     aff | (ka::kLevelInfoLineLevel << ka::kLevelInfoShift) | intids[i],
                                     &bits, "LEVEL_INFO " + std::to_string(intids[i])));
      lv[static_cast<unsigned>(i)].setIntid(intids[i]);
      lv[static_cast<unsigned>(i)].setBits(bits);
    }
  }
  return Status::Ok();
}

Status CaptureIts(ka::Device& its, schema::aarch64::Its::Builder out) {
  out.setPresent(true);
  uint64_t base = 0;
  VMSNAP_RETURN_IF_ERROR(GetAttr(its, ka::kGrpAddr, ka::kAddrIts, &base, "KVM_VGIC_ITS_ADDR_TYPE"));
  out.setBase(base);
  // The translations go into the guest's ITS tables, guest memory saved after this.
  VMSNAP_RETURN_IF_ERROR(SetCtrl(its, ka::kCtrlItsSaveTables, "KVM_DEV_ARM_ITS_SAVE_TABLES"));
  out.setTablesSaved(true);
  auto offs = ka::ItsRegOffsets();
  auto regs = out.initRegs(static_cast<unsigned>(offs.size()));
  for (size_t i = 0; i < offs.size(); ++i) {
    uint64_t v = 0;
    VMSNAP_RETURN_IF_ERROR(GetAttr(its, ka::kGrpItsRegs, offs[i], &v, "GITS+" + IdHex(offs[i])));
    regs[static_cast<unsigned>(i)].setOffset(offs[i]);
    regs[static_cast<unsigned>(i)].setValue(v);
  }
  return Status::Ok();
}

Status CaptureManifest(ka::Vm& vm, std::span<ka::Vcpu* const> vcpus, const Options& options,
                       schema::Manifest::Builder manifest) {
  (void)vm;
  manifest.setArch(schema::Arch::AARCH64);
  if (options.inits.size() != vcpus.size()) {
    return Status::InvalidArgument("aarch64 capture: " + std::to_string(vcpus.size()) + " vCPUs but " +
                                   std::to_string(options.inits.size()) + " KVM_ARM_VCPU_INIT records");
  }
  auto out_vcpus = manifest.initVcpus(static_cast<unsigned>(vcpus.size()));
  for (size_t i = 0; i < vcpus.size(); ++i) {
    out_vcpus[static_cast<unsigned>(i)].setId(static_cast<uint32_t>(i));
    Status s = CaptureVcpu(*vcpus[i], options.inits[i], out_vcpus[static_cast<unsigned>(i)].initAarch64());
    if (!s.ok()) return s.Context("vCPU " + std::to_string(i)).Context("aarch64 capture");
  }
  auto out_vm = manifest.initVm().initAarch64();
  if (options.gic) {
    Status s = CaptureGic(*options.gic, vcpus, out_vm.initGic());
    if (!s.ok()) return s.Context("vGICv3").Context("aarch64 capture");
  }
  if (options.its) {
    Status s = CaptureIts(*options.its, out_vm.initIts());
    if (!s.ok()) return s.Context("ITS").Context("aarch64 capture");
  }
  if (options.counter_offset) {
    out_vm.setHasCounterOffset(true);
    out_vm.setCounterOffset(*options.counter_offset);
  }
  return Status::Ok();
}

}  // namespace vmsnap::capture::aarch64
