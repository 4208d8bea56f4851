// SPDX-License-Identifier: MIT
// s390x vCPU and VM state held in memory behind kvm::s390::Vcpu/Vm: written
// through capture/s390x, read through restore/s390x (see arch_state.h).
#include <algorithm>
#include <map>
#include <optional>

#include "capture/s390x/s390_capture.h"
#include "lib/arch_state.h"
#include "lib/internal.h"
#include "restore/s390x/s390_restore.h"

namespace vmsnap::capi {
namespace {
namespace ks = kvm::s390;

// struct kvm_s390_vm_tod_clock.
struct TodClock {
  uint8_t epoch_idx;
  uint64_t tod;
};
static_assert(sizeof(TodClock) == 16);
static_assert(sizeof(ks::Fpu) == 136);
static_assert(sizeof(vmsnap_s390_run_regs) == 24);

class MemVcpu final : public ks::Vcpu, public MemVcpuState {
 public:
  explicit MemVcpu(uint32_t index) : MemVcpuState(index) {}
  std::optional<ks::Regs> regs;
  std::optional<ks::Sregs> sregs;
  std::optional<ks::Fpu> fpu;
  std::optional<kvm_mp_state> mp;
  std::optional<vmsnap_s390_run_regs> run;

  int GetRegs(ks::Regs* r) override { return Get(regs, r, "VMSNAP_S390_REGS"); }
  int SetRegs(const ks::Regs& r) override { regs = r; return 0; }
  int GetSregs(ks::Sregs* r) override { return Get(sregs, r, "VMSNAP_S390_SREGS"); }
  int SetSregs(const ks::Sregs& r) override { sregs = r; return 0; }
  int GetFpu(ks::Fpu* r) override { return Get(fpu, r, "VMSNAP_S390_FPU"); }
  int SetFpu(const ks::Fpu& r) override { fpu = r; return 0; }
  int GetMpState(kvm_mp_state* r) override { return Get(mp, r, "VMSNAP_S390_MP_STATE"); }
  int SetMpState(const kvm_mp_state& r) override { mp = r; return 0; }
  int GetOneReg(const kvm_one_reg& r) override { return ReadOneReg(r); }
  int SetOneReg(const kvm_one_reg& r) override { return WriteOneReg(r); }
  int GetPsw(uint64_t* mask, uint64_t* addr) override {
    if (!run) return Absent("VMSNAP_S390_RUN_REGS");
    *mask = run->psw_mask;
    *addr = run->psw_addr;
    return 0;
  }
  int SetPsw(uint64_t mask, uint64_t addr) override {
    if (!run) run = vmsnap_s390_run_regs{};
    run->psw_mask = mask;
    run->psw_addr = addr;
    return 0;
  }
  int GetPrefix(uint32_t* prefix) override {
    if (!run) return Absent("VMSNAP_S390_RUN_REGS");
    *prefix = run->prefix;
    return 0;
  }
  int SetPrefix(uint32_t prefix) override {
    if (!run) run = vmsnap_s390_run_regs{};
    run->prefix = prefix;
    return 0;
  }
};

// Guest frames of the memory map, in region order, as indexes into the
// one-byte-per-page layout of VMSNAP_S390_SKEYS and _CMMA.
class PageMap {
 public:
  PageMap(const std::vector<MemRange>& memory, uint64_t page) {
    uint64_t index = 0;
    for (const MemRange& m : memory) {
      runs_.push_back({m.gpa / page, m.size / page, index});
      index += m.size / page;
    }
    pages_ = index;
  }
  uint64_t pages() const { return pages_; }
  std::optional<uint64_t> Index(uint64_t gfn) const {
    for (const Run& r : runs_) {
      if (gfn >= r.gfn && gfn < r.gfn + r.n) return r.index + (gfn - r.gfn);
    }
    return std::nullopt;
  }
  template <typename F>
  void ForEach(F&& f) const {
    for (const Run& r : runs_) {
      for (uint64_t i = 0; i < r.n; ++i) f(r.gfn + i);
    }
  }
  std::vector<capture::s390x::GfnRange> Ranges() const {
    std::vector<capture::s390x::GfnRange> out;
    for (const Run& r : runs_) out.push_back({r.gfn, r.n});
    return out;
  }

 private:
  struct Run {
    uint64_t gfn, n, index;
  };
  std::vector<Run> runs_;
  uint64_t pages_ = 0;
};

class MemVm final : public ks::Vm {
 public:
  explicit MemVm(const PageMap* pages) : pages_(pages) {}
  // Write side: what the caller set, one byte per page of the map.
  std::optional<TodClock> tod;
  std::optional<std::vector<uint8_t>> skeys, cmma;
  std::string missing;
  // Read side: what the restore set, by frame.
  std::map<uint64_t, uint8_t> skeys_set, cmma_set;
  bool skeys_restored = false, cmma_enabled = false;

  int GetCmmaBits(ks::CmmaLog* log) override {
    if (!cmma) return -ENXIO;  // CMMA off: what KVM answers
    if (!(log->flags & ks::kCmmaPeek)) return -EINVAL;  // the capture here peeks
    auto* out = reinterpret_cast<uint8_t*>(log->values);
    uint32_t n = 0;
    for (; n < log->count; ++n) {
      auto i = pages_->Index(log->start_gfn + n);
      if (!i) break;
      out[n] = (*cmma)[*i];
    }
    log->count = n;
    log->remaining = 0;
    return 0;
  }
  int SetCmmaBits(const ks::CmmaLog& log) override {
    const auto* v = reinterpret_cast<const uint8_t*>(log.values);
    for (uint32_t i = 0; i < log.count; ++i) cmma_set[log.start_gfn + i] = v[i];
    return 0;
  }
  int GetSkeys(const ks::Skeys& args) override {
    if (!skeys) return ks::kGetSkeysNone;
    auto* out = reinterpret_cast<uint8_t*>(args.skeydata_addr);
    for (uint64_t i = 0; i < args.count; ++i) {
      auto idx = pages_->Index(args.start_gfn + i);
      if (!idx) return -EFAULT;
      out[i] = (*skeys)[*idx];
    }
    return 0;
  }
  int SetSkeys(const ks::Skeys& args) override {
    skeys_restored = true;
    const auto* v = reinterpret_cast<const uint8_t*>(args.skeydata_addr);
    for (uint64_t i = 0; i < args.count; ++i) skeys_set[args.start_gfn + i] = v[i];
    return 0;
  }
  int SetAttr(const kvm_device_attr& a) override {
    if (a.group == ks::kVmTod) {
      if (!tod) tod = TodClock{};
      if (a.attr == ks::kVmTodHigh) std::memcpy(&tod->epoch_idx, reinterpret_cast<void*>(a.addr), 1);
      if (a.attr == ks::kVmTodLow) std::memcpy(&tod->tod, reinterpret_cast<void*>(a.addr), 8);
    } else if (a.group == ks::kVmMemCtrl && a.attr == ks::kVmMemEnableCmma) {
      cmma_enabled = true;
    }
    return 0;
  }
  int GetAttr(const kvm_device_attr& a) override {
    if (a.group != ks::kVmTod) return -ENXIO;
    if (!tod) {
      missing = "the VM has no VMSNAP_S390_TOD state (vmsnap_writer_set_vm_state)";
      return -ENOENT;
    }
    if (a.attr == ks::kVmTodHigh) std::memcpy(reinterpret_cast<void*>(a.addr), &tod->epoch_idx, 1);
    if (a.attr == ks::kVmTodLow) std::memcpy(reinterpret_cast<void*>(a.addr), &tod->tod, 8);
    return 0;
  }
  int HasAttr(const kvm_device_attr&) override { return 0; }

 private:
  const PageMap* pages_;
};

class S390Writer final : public ArchWriter {
 public:
  uint32_t page_size() const override { return 4096; }
  size_t vcpu_count() const override { return vcpus_.size(); }

  int SetVcpu(uint32_t vcpu, vmsnap_state what, const void* buf, size_t size) override {
    MemVcpu& v = VcpuAt(vcpus_, vcpu);
    switch (what) {
      case VMSNAP_S390_REGS: return StoreExact(v.regs, buf, size, "VMSNAP_S390_REGS");
      case VMSNAP_S390_SREGS: return StoreExact(v.sregs, buf, size, "VMSNAP_S390_SREGS");
      case VMSNAP_S390_FPU: return StoreExact(v.fpu, buf, size, "VMSNAP_S390_FPU");
      case VMSNAP_S390_MP_STATE: return StoreExact(v.mp, buf, size, "VMSNAP_S390_MP_STATE");
      case VMSNAP_S390_RUN_REGS: {
        std::optional<vmsnap_s390_run_regs> run;
        if (int rc = StoreExact(run, buf, size, "VMSNAP_S390_RUN_REGS")) return rc;
        if (run->reserved != 0) return Invalid("VMSNAP_S390_RUN_REGS: reserved must be zero");
        v.run = run;
        return Ok();
      }
      case VMSNAP_ONE_REGS: return StoreOneRegs(v.one, buf, size);
      default: return NotStateOf(what, "s390x per-vCPU");
    }
  }

  int SetVm(vmsnap_state what, const void* buf, size_t size) override {
    switch (what) {
      case VMSNAP_S390_TOD: return StoreExact(tod_, buf, size, "VMSNAP_S390_TOD");
      case VMSNAP_S390_SKEYS:
        skeys_ = std::vector<uint8_t>(static_cast<const uint8_t*>(buf), static_cast<const uint8_t*>(buf) + size);
        return Ok();
      case VMSNAP_S390_CMMA:
        cmma_ = std::vector<uint8_t>(static_cast<const uint8_t*>(buf), static_cast<const uint8_t*>(buf) + size);
        return Ok();
      default: return NotStateOf(what, "s390x VM");
    }
  }

  Status Capture(const std::vector<MemRange>& memory, schema::Manifest::Builder m) override {
    PageMap pages(memory, page_size());
    for (auto* v : {&skeys_, &cmma_}) {
      if (*v && (*v)->size() != pages.pages()) {
        return Status::InvalidArgument(std::string(v == &skeys_ ? "VMSNAP_S390_SKEYS" : "VMSNAP_S390_CMMA") +
                                       " holds " + std::to_string((*v)->size()) +
                                       " bytes; the memory regions added have " + std::to_string(pages.pages()) +
                                       " pages (one byte each)");
      }
    }
    MemVm vm(&pages);
    vm.tod = tod_;
    vm.skeys = skeys_;
    vm.cmma = cmma_;
    std::vector<ks::Vcpu*> ops;
    for (auto& v : vcpus_) ops.push_back(v.get());
    capture::s390x::Options o;
    o.memory = pages.Ranges();
    o.cmma_mode = capture::s390x::CmmaMode::kPeek;
    Status st = capture::s390x::CaptureManifest(vm, ops, o, m);
    if (!st.ok()) {
      for (auto& v : vcpus_) {
        if (!v->missing.empty()) return Status::InvalidArgument(v->missing);
      }
      if (!vm.missing.empty()) return Status::InvalidArgument(vm.missing);
      return st;
    }
    for (size_t i = 0; i < vcpus_.size(); ++i) {
      VMSNAP_RETURN_IF_ERROR(CheckOneRegsStored(vcpus_[i]->one, vcpus_[i]->asked, i, "an s390x"));
    }
    return Status::Ok();
  }

 private:
  std::vector<std::unique_ptr<MemVcpu>> vcpus_;
  std::optional<TodClock> tod_;
  std::optional<std::vector<uint8_t>> skeys_, cmma_;
};

std::vector<MemRange> SnapshotMemory(const vmsnap_snapshot* s) {
  std::vector<MemRange> out;
  for (auto r : LeafManifest(s).getMemory().getRegions()) out.push_back({r.getGuestPhysAddr(), r.getSize()});
  return out;
}

}  // namespace

std::unique_ptr<ArchWriter> NewS390Writer() { return std::make_unique<S390Writer>(); }

int ReadS390Vcpu(const vmsnap_snapshot* s, uint32_t vcpu, vmsnap_state what, void* buf, size_t buf_size,
                 size_t* size) {
  MemVcpu st(vcpu);
  Status r = restore::s390x::RestoreVcpu(st, LeafManifest(s).getVcpus()[vcpu].getS390x());
  if (!r.ok()) return Fail(r.Context("snapshot " + SnapshotPath(s) + ", vCPU " + std::to_string(vcpu)));
  switch (what) {
    case VMSNAP_S390_REGS: return Answer(s, st.regs, "s390x REGS", buf, buf_size, size);
    case VMSNAP_S390_SREGS: return Answer(s, st.sregs, "s390x SREGS", buf, buf_size, size);
    case VMSNAP_S390_FPU: return Answer(s, st.fpu, "s390x FPU", buf, buf_size, size);
    case VMSNAP_S390_MP_STATE: return Answer(s, st.mp, "s390x MP_STATE", buf, buf_size, size);
    case VMSNAP_S390_RUN_REGS: return Answer(s, st.run, "s390x RUN_REGS", buf, buf_size, size);
    case VMSNAP_ONE_REGS: return AnswerOneRegs(st.one, buf, buf_size, size);
    default: return NotStateOf(what, "s390x per-vCPU");
  }
}

int ReadS390Vm(const vmsnap_snapshot* s, vmsnap_state what, void* buf, size_t buf_size, size_t* size) {
  auto memory = SnapshotMemory(s);
  PageMap pages(memory, 4096);
  MemVm vm(&pages);
  auto state = LeafManifest(s).getVm().getS390x();
  Status r = restore::s390x::RestoreVmConfig(vm, state);
  if (r.ok()) r = restore::s390x::RestoreVmState(vm, state);
  if (!r.ok()) return Fail(r.Context("snapshot " + SnapshotPath(s)));
  auto per_page = [&](const std::map<uint64_t, uint8_t>& set) {
    std::vector<uint8_t> out;
    out.reserve(pages.pages());
    pages.ForEach([&](uint64_t gfn) {
      auto it = set.find(gfn);
      out.push_back(it == set.end() ? 0 : it->second);
    });
    return CopyOut(out.data(), out.size(), buf, buf_size, size);
  };
  switch (what) {
    case VMSNAP_S390_TOD: return Answer(s, vm.tod, "s390x TOD", buf, buf_size, size);
    case VMSNAP_S390_SKEYS:
      if (!vm.skeys_restored) return Missing(s, "s390x storage keys (the guest never used them)");
      return per_page(vm.skeys_set);
    case VMSNAP_S390_CMMA:
      if (!vm.cmma_enabled) return Missing(s, "s390x CMMA values (CMMA was not enabled)");
      return per_page(vm.cmma_set);
    default: return NotStateOf(what, "s390x VM");
  }
}

}  // namespace vmsnap::capi
