// SPDX-License-Identifier: MIT
// s390x capture: see s390_capture.h.
#include "capture/s390x/s390_capture.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace vmsnap::capture::s390x {
namespace ks = kvm::s390;
namespace {


Status GetAttr(ks::Vm& vm, uint32_t group, uint64_t attr, void* out, const char* what) {
  kvm_device_attr a{};
  a.group = group;
  a.attr = attr;
  a.addr = reinterpret_cast<uintptr_t>(out);
  return ks::IoctlStatus(ks::RetryEintr([&] { return vm.GetAttr(a); }),
                         std::string("KVM_GET_DEVICE_ATTR ") + what);
}

}  // namespace

Status CmmaTracker::Start() {
  kvm_device_attr a{};
  a.group = ks::kVmMigration;
  a.attr = ks::kVmMigrationStart;
  int rc = ks::RetryEintr([&] { return vm_.SetAttr(a); });
  VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(rc, "KVM_SET_DEVICE_ATTR KVM_S390_VM_MIGRATION_START"));
  started_ = true;
  // Probe whether CMMA is on at all: without it GET_CMMA_BITS is ENXIO
  // whatever we ask, and there is nothing to save.
  ks::CmmaLog probe{};
  probe.flags = ks::kCmmaPeek;
  rc = ks::RetryEintr([&] { return vm_.GetCmmaBits(&probe); });
  if (rc == -ENXIO) enabled_ = false;
  return Status::Ok();
}

void CmmaTracker::Store(uint64_t start_gfn, const uint8_t* values, uint64_t count) {
  if (count == 0) return;
  uint64_t end = start_gfn + count;
  if (values_.size() < end) {
    values_.resize(end, 0);
    known_.resize(end, false);
  }
  for (uint64_t i = 0; i < count; ++i) {
    values_[start_gfn + i] = values[i];
    known_[start_gfn + i] = true;
  }
}

// As QEMU's s390-stattrib-kvm: follow start_gfn forward; the kernel wraps
// around to the lowest slot by itself; `remaining` says when we are done.
Status CmmaTracker::Pass(unsigned max_calls) {
  if (!enabled_) return Status::Ok();
  if (!started_) return Status::Internal("CMMA pass before migration mode was started");
  std::vector<uint8_t> buf(buffer_);
  uint64_t cursor = 0;
  int empty_in_a_row = 0;
  for (unsigned n = 0; max_calls == 0 || n < max_calls; ++n) {
    ks::CmmaLog log{};
    log.start_gfn = cursor;
    log.count = buffer_;
    log.flags = 0;
    log.values = reinterpret_cast<uintptr_t>(buf.data());
    int rc = ks::RetryEintr([&] {
      ks::CmmaLog attempt = log;
      int r = vm_.GetCmmaBits(&attempt);
      if (r >= 0) log = attempt;
      return r;
    });
    ++calls_;
    VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(rc, "KVM_S390_GET_CMMA_BITS",
                                           " (start_gfn " + std::to_string(cursor) + ")"));
    Store(log.start_gfn, buf.data(), log.count);
    if (log.remaining == 0) return Status::Ok();
    if (log.count == 0) {
      // start_gfn was past the end of memory: the next call wraps to the
      // lowest slot. Twice in a row means the kernel is not making progress.
      if (++empty_in_a_row > 1)
        return Status::Kvm("KVM_S390_GET_CMMA_BITS: no values returned but " +
                           std::to_string(log.remaining) + " dirty pages remaining");
    } else {
      empty_in_a_row = 0;
    }
    cursor = log.start_gfn + log.count;
  }
  return Status::Ok();
}

Status CmmaTracker::Stop() {
  if (!started_) return Status::Ok();
  kvm_device_attr a{};
  a.group = ks::kVmMigration;
  a.attr = ks::kVmMigrationStop;
  int rc = ks::RetryEintr([&] { return vm_.SetAttr(a); });
  started_ = false;
  return ks::IoctlStatus(rc, "KVM_SET_DEVICE_ATTR KVM_S390_VM_MIGRATION_STOP");
}

Status CmmaTracker::Peek(std::span<const GfnRange> memory) {
  std::vector<uint8_t> buf(buffer_);
  for (const GfnRange& r : memory) {
    uint64_t gfn = r.start_gfn;
    const uint64_t end = r.start_gfn + r.npages;
    while (gfn < end) {
      ks::CmmaLog log{};
      log.start_gfn = gfn;
      log.count = static_cast<uint32_t>(std::min<uint64_t>(buffer_, end - gfn));
      log.flags = ks::kCmmaPeek;
      log.values = reinterpret_cast<uintptr_t>(buf.data());
      const ks::CmmaLog request = log;
      int rc = ks::RetryEintr([&] {
        log = request;
        return vm_.GetCmmaBits(&log);
      });
      ++calls_;
      if (rc == -ENXIO) {
        enabled_ = false;
        return Status::Ok();
      }
      VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(rc, "KVM_S390_GET_CMMA_BITS (peek)",
                                             " (start_gfn " + std::to_string(gfn) + ")"));
      // The kernel answers 0 values when the guest never used CMM: every
      // page is then still in its initial (stable) state, nothing to store.
      if (log.count == 0) break;
      Store(gfn, buf.data(), log.count);
      gfn += log.count;
    }
  }
  return Status::Ok();
}

void CmmaTracker::Fill(schema::s390::Vm::Builder vm) const {
  vm.setCmmaEnabled(enabled_);
  // Runs of known values; none longer than the kernel takes in one SET.
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  for (uint64_t g = 0; g < known_.size();) {
    if (!known_[g]) {
      ++g;
      continue;
    }
    uint64_t start = g;
    while (g < known_.size() && known_[g] && g - start < ks::kCmmaSizeMax) ++g;
    runs.emplace_back(start, g - start);
  }
  auto list = vm.initCmma(static_cast<unsigned>(runs.size()));
  for (size_t i = 0; i < runs.size(); ++i) {
    list[i].setStartGfn(runs[i].first);
    list[i].setValues(kj::arrayPtr(values_.data() + runs[i].first, runs[i].second));
  }
}

Status CaptureSkeys(ks::Vm& vm, std::span<const GfnRange> memory, uint64_t block,
                    schema::s390::Vm::Builder out) {
  block = std::clamp<uint64_t>(block, 1, ks::kSkeysMax);
  struct Run {
    uint64_t start;
    std::vector<uint8_t> keys;
  };
  std::vector<Run> runs;
  for (const GfnRange& r : memory) {
    for (uint64_t gfn = r.start_gfn; gfn < r.start_gfn + r.npages;) {
      uint64_t n = std::min<uint64_t>(block, r.start_gfn + r.npages - gfn);
      Run run{gfn, std::vector<uint8_t>(n)};
      ks::Skeys args{};
      args.start_gfn = gfn;
      args.count = n;
      args.skeydata_addr = reinterpret_cast<uintptr_t>(run.keys.data());
      int rc = ks::RetryEintr([&] { return vm.GetSkeys(args); });
      if (rc == ks::kGetSkeysNone) {  // the guest never used storage keys
        out.setSkeysUsed(false);
        out.initSkeys(0);
        return Status::Ok();
      }
      VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(rc, "KVM_S390_GET_SKEYS",
                                             " (start_gfn " + std::to_string(gfn) +
                                                 ", count " + std::to_string(n) + ")"));
      runs.push_back(std::move(run));
      gfn += n;
    }
  }
  out.setSkeysUsed(true);
  auto list = out.initSkeys(static_cast<unsigned>(runs.size()));
  for (size_t i = 0; i < runs.size(); ++i) {
    list[i].setStartGfn(runs[i].start);
    list[i].setKeys(kj::arrayPtr(runs[i].keys.data(), runs[i].keys.size()));
  }
  return Status::Ok();
}

Status CaptureVcpu(ks::Vcpu& vcpu, schema::s390::Vcpu::Builder out) {
  kvm_mp_state mp{};
  VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(ks::RetryEintr([&] { return vcpu.GetMpState(&mp); }),
                                         "KVM_GET_MP_STATE"));
  out.setMpState(mp.mp_state);

  ks::Regs regs{};
  VMSNAP_RETURN_IF_ERROR(
      ks::IoctlStatus(ks::RetryEintr([&] { return vcpu.GetRegs(&regs); }), "KVM_GET_REGS"));
  auto gprs = out.initGprs(16);
  for (unsigned i = 0; i < 16; ++i) gprs.set(i, regs.gprs[i]);

  ks::Sregs sregs{};
  VMSNAP_RETURN_IF_ERROR(
      ks::IoctlStatus(ks::RetryEintr([&] { return vcpu.GetSregs(&sregs); }), "KVM_GET_SREGS"));
  auto acrs = out.initAcrs(16);
  auto crs = out.initCrs(16);
  for (unsigned i = 0; i < 16; ++i) {
    acrs.set(i, sregs.acrs[i]);
    crs.set(i, sregs.crs[i]);
  }

  ks::Fpu fpu{};
  VMSNAP_RETURN_IF_ERROR(
      ks::IoctlStatus(ks::RetryEintr([&] { return vcpu.GetFpu(&fpu); }), "KVM_GET_FPU"));
  auto fprs = out.initFprs(16);
  for (unsigned i = 0; i < 16; ++i) fprs.set(i, fpu.fprs[i]);
  out.setFpc(fpu.fpc);

  uint64_t mask = 0, addr = 0;
  VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(vcpu.GetPsw(&mask, &addr), "kvm_run.psw"));
  out.setPswMask(mask);
  out.setPswAddr(addr);
  uint32_t prefix = 0;
  VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(vcpu.GetPrefix(&prefix), "kvm_run.s.regs.prefix"));
  out.setPrefix(prefix);

  auto one = [&](uint64_t id, void* value, const char* name) {
    kvm_one_reg r{id, reinterpret_cast<uintptr_t>(value)};
    return ks::IoctlStatus(ks::RetryEintr([&] { return vcpu.GetOneReg(r); }),
                           std::string("KVM_GET_ONE_REG ") + name);
  };
  uint64_t cputm = 0, ckc = 0, pp = 0, gbea = 0;
  uint32_t todpr = 0;
  VMSNAP_RETURN_IF_ERROR(one(ks::kRegCpuTimer, &cputm, "CPU_TIMER"));
  VMSNAP_RETURN_IF_ERROR(one(ks::kRegClockComp, &ckc, "CLOCK_COMP"));
  VMSNAP_RETURN_IF_ERROR(one(ks::kRegTodpr, &todpr, "TODPR"));
  VMSNAP_RETURN_IF_ERROR(one(ks::kRegPp, &pp, "PP"));
  VMSNAP_RETURN_IF_ERROR(one(ks::kRegGbea, &gbea, "GBEA"));
  out.setCpuTimer(cputm);
  out.setClockComparator(ckc);
  out.setTodpr(todpr);
  out.setPp(pp);
  out.setGbea(gbea);
  return Status::Ok();
}

Status CaptureManifest(ks::Vm& vm, std::span<ks::Vcpu* const> vcpus, const Options& options,
                       schema::Manifest::Builder manifest, CmmaTracker* live) {
  manifest.setArch(schema::Arch::S390X);
  auto out_vcpus = manifest.initVcpus(static_cast<unsigned>(vcpus.size()));
  for (size_t i = 0; i < vcpus.size(); ++i) {
    out_vcpus[i].setId(static_cast<uint32_t>(i));
    Status s = CaptureVcpu(*vcpus[i], out_vcpus[i].initS390x());
    if (!s.ok()) return s.Context("vCPU " + std::to_string(i)).Context("s390x capture");
  }
  auto out_vm = manifest.initVm().initS390x();

  if (live) {
    VMSNAP_RETURN_IF_ERROR(live->Pass());  // the final pass, with the guest stopped
    VMSNAP_RETURN_IF_ERROR(live->Stop());
    live->Fill(out_vm);
  } else {
    CmmaTracker cmma(vm, options.cmma_buffer);
    if (options.cmma_mode == CmmaMode::kPeek) {
      VMSNAP_RETURN_IF_ERROR(cmma.Peek(options.memory));
    } else {
      VMSNAP_RETURN_IF_ERROR(cmma.Start());
      Status s = cmma.Pass();
      Status stop = cmma.Stop();
      VMSNAP_RETURN_IF_ERROR(s);
      VMSNAP_RETURN_IF_ERROR(stop);
    }
    cmma.Fill(out_vm);
  }

  VMSNAP_RETURN_IF_ERROR(CaptureSkeys(vm, options.memory, options.skeys_block, out_vm));

  uint8_t tod_high = 0;
  uint64_t tod_low = 0;
  VMSNAP_RETURN_IF_ERROR(GetAttr(vm, ks::kVmTod, ks::kVmTodHigh, &tod_high, "KVM_S390_VM_TOD_HIGH"));
  VMSNAP_RETURN_IF_ERROR(GetAttr(vm, ks::kVmTod, ks::kVmTodLow, &tod_low, "KVM_S390_VM_TOD_LOW"));
  out_vm.setTodHigh(tod_high);
  out_vm.setTodLow(tod_low);
  return Status::Ok();
}

}  // namespace vmsnap::capture::s390x
