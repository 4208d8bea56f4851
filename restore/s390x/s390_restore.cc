// SPDX-License-Identifier: MIT
// s390x restore: see s390_restore.h.
#include "restore/s390x/s390_restore.h"

#include <algorithm>
#include <string>
#include <vector>

namespace vmsnap::restore::s390x {
namespace ks = kvm::s390;
namespace {

Status SetAttr(ks::Vm& vm, uint32_t group, uint64_t attr, const void* value, const char* what) {
  kvm_device_attr a{};
  a.group = group;
  a.attr = attr;
  a.addr = reinterpret_cast<uintptr_t>(value);
  return ks::IoctlStatus(ks::RetryEintr([&] { return vm.SetAttr(a); }),
                         std::string("KVM_SET_DEVICE_ATTR ") + what);
}

}  // namespace

Status RestoreVmConfig(ks::Vm& vm, schema::s390::Vm::Reader state) {
  if (!state.getCmmaEnabled()) return Status::Ok();
  return SetAttr(vm, ks::kVmMemCtrl, ks::kVmMemEnableCmma, nullptr, "KVM_S390_VM_MEM_ENABLE_CMMA");
}

Status RestoreVmState(ks::Vm& vm, schema::s390::Vm::Reader state, const Options& options) {
  // Keys are restored only for a guest that used them: SET_SKEYS switches
  // key handling on for the whole guest, which costs it performance.
  if (state.getSkeysUsed()) {
    const uint64_t block = std::clamp<uint64_t>(options.skeys_block, 1, ks::kSkeysMax);
    for (auto run : state.getSkeys()) {
      auto keys = run.getKeys();
      for (uint64_t off = 0; off < keys.size(); off += block) {
        ks::Skeys args{};
        args.start_gfn = run.getStartGfn() + off;
        args.count = std::min<uint64_t>(block, keys.size() - off);
        args.skeydata_addr = reinterpret_cast<uintptr_t>(keys.begin() + off);
        VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(
            ks::RetryEintr([&] { return vm.SetSkeys(args); }), "KVM_S390_SET_SKEYS",
            " (start_gfn " + std::to_string(args.start_gfn) + ")"));
      }
    }
  }

  if (state.getCmmaEnabled()) {
    const uint32_t block = std::clamp<uint32_t>(options.cmma_block, 1, ks::kCmmaSizeMax);
    for (auto run : state.getCmma()) {
      auto values = run.getValues();
      for (uint64_t off = 0; off < values.size(); off += block) {
        ks::CmmaLog log{};
        log.start_gfn = run.getStartGfn() + off;
        log.count = static_cast<uint32_t>(std::min<uint64_t>(block, values.size() - off));
        log.flags = 0;
        log.mask = ~0ull;  // every bit the kernel allows (usage state and NODAT)
        log.values = reinterpret_cast<uintptr_t>(values.begin() + off);
        VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(
            ks::RetryEintr([&] { return vm.SetCmmaBits(log); }), "KVM_S390_SET_CMMA_BITS",
            " (start_gfn " + std::to_string(log.start_gfn) + ")"));
      }
    }
  } else if (state.getCmma().size() > 0) {
    return Status::Corruption("s390x state has CMMA values but cmmaEnabled is false");
  }

  // TOD: the high byte (epoch index) first; setting the low part sets the
  // guest's epoch relative to the host clock.
  uint8_t high = state.getTodHigh();
  uint64_t low = state.getTodLow();
  VMSNAP_RETURN_IF_ERROR(SetAttr(vm, ks::kVmTod, ks::kVmTodHigh, &high, "KVM_S390_VM_TOD_HIGH"));
  VMSNAP_RETURN_IF_ERROR(SetAttr(vm, ks::kVmTod, ks::kVmTodLow, &low, "KVM_S390_VM_TOD_LOW"));
  return Status::Ok();
}

Status RestoreVcpu(ks::Vcpu& vcpu, schema::s390::Vcpu::Reader st) {
  auto need16 = [](auto list, const char* name) {
    return list.size() == 16 ? Status::Ok()
                             : Status::Corruption(std::string("s390x vCPU ") + name + " has " +
                                                  std::to_string(list.size()) + " entries, expected 16");
  };
  VMSNAP_RETURN_IF_ERROR(need16(st.getGprs(), "gprs"));
  VMSNAP_RETURN_IF_ERROR(need16(st.getAcrs(), "acrs"));
  VMSNAP_RETURN_IF_ERROR(need16(st.getCrs(), "crs"));
  VMSNAP_RETURN_IF_ERROR(need16(st.getFprs(), "fprs"));

  ks::Regs regs{};
  for (unsigned i = 0; i < 16; ++i) regs.gprs[i] = st.getGprs()[i];
  VMSNAP_RETURN_IF_ERROR(
      ks::IoctlStatus(ks::RetryEintr([&] { return vcpu.SetRegs(regs); }), "KVM_SET_REGS"));

  // Control registers before anything that depends on the address-space
  // setup they describe; access registers travel with them.
  ks::Sregs sregs{};
  for (unsigned i = 0; i < 16; ++i) {
    sregs.acrs[i] = st.getAcrs()[i];
    sregs.crs[i] = st.getCrs()[i];
  }
  VMSNAP_RETURN_IF_ERROR(
      ks::IoctlStatus(ks::RetryEintr([&] { return vcpu.SetSregs(sregs); }), "KVM_SET_SREGS"));

  ks::Fpu fpu{};
  fpu.fpc = st.getFpc();
  for (unsigned i = 0; i < 16; ++i) fpu.fprs[i] = st.getFprs()[i];
  VMSNAP_RETURN_IF_ERROR(
      ks::IoctlStatus(ks::RetryEintr([&] { return vcpu.SetFpu(fpu); }), "KVM_SET_FPU"));

  auto one = [&](uint64_t id, const void* value, const char* name) {
    kvm_one_reg r{id, reinterpret_cast<uintptr_t>(value)};
    return ks::IoctlStatus(ks::RetryEintr([&] { return vcpu.SetOneReg(r); }),
                           std::string("KVM_SET_ONE_REG ") + name);
  };
  uint64_t cputm = st.getCpuTimer(), ckc = st.getClockComparator(), pp = st.getPp(),
           gbea = st.getGbea();
  uint32_t todpr = st.getTodpr();
  VMSNAP_RETURN_IF_ERROR(one(ks::kRegCpuTimer, &cputm, "CPU_TIMER"));
  VMSNAP_RETURN_IF_ERROR(one(ks::kRegClockComp, &ckc, "CLOCK_COMP"));
  VMSNAP_RETURN_IF_ERROR(one(ks::kRegTodpr, &todpr, "TODPR"));
  VMSNAP_RETURN_IF_ERROR(one(ks::kRegPp, &pp, "PP"));
  VMSNAP_RETURN_IF_ERROR(one(ks::kRegGbea, &gbea, "GBEA"));

  // PSW and prefix go through the run area and take effect at the next KVM_RUN.
  VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(vcpu.SetPsw(st.getPswMask(), st.getPswAddr()), "kvm_run.psw"));
  VMSNAP_RETURN_IF_ERROR(ks::IoctlStatus(vcpu.SetPrefix(st.getPrefix()), "kvm_run.s.regs.prefix"));

  // Last: OPERATING starts the CPU, which must not happen with half its
  // registers restored.
  kvm_mp_state mp{st.getMpState()};
  return ks::IoctlStatus(ks::RetryEintr([&] { return vcpu.SetMpState(mp); }), "KVM_SET_MP_STATE");
}

Status RestoreManifest(ks::Vm& vm, std::span<ks::Vcpu* const> vcpus, schema::Manifest::Reader m,
                       const Options& options) {
  if (m.getArch() != schema::Arch::S390X)
    return Status::WrongArch("snapshot is not for s390x (wrong architecture)");
  if (!m.getVm().isS390x()) return Status::Corruption("s390x snapshot without s390x VM state");
  if (m.getVcpus().size() != vcpus.size())
    return Status::InvalidArgument("snapshot has " + std::to_string(m.getVcpus().size()) +
                                   " vCPUs, the VM has " + std::to_string(vcpus.size()));
  VMSNAP_RETURN_IF_ERROR(RestoreVmState(vm, m.getVm().getS390x(), options));
  for (size_t i = 0; i < vcpus.size(); ++i) {
    auto v = m.getVcpus()[i];
    if (!v.isS390x()) return Status::Corruption("vCPU " + std::to_string(i) + " has no s390x state");
    Status s = RestoreVcpu(*vcpus[i], v.getS390x());
    if (!s.ok()) return s.Context("vCPU " + std::to_string(i)).Context("s390x restore");
  }
  return Status::Ok();
}

}  // namespace vmsnap::restore::s390x
