// SPDX-License-Identifier: MIT
// The ppc64 (book3s HV) kernel model: see ppc64_model.h. Each function names
// the kernel function it follows; deviations are commented.
#include "tests/model/kernel/ppc64_model.h"

#include <endian.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vmsnap::kvm::model {
namespace {

// record_hpte() reads the first doubleword while holding the HPTE lock, so
// every HPTE in a read stream carries the lock bit; h_enter strips it.
constexpr uint64_t kHpteVHvlock = ppc::kHpteVHvlock;
constexpr uint64_t kRc = ppc::kHpteRR | ppc::kHpteRC;

}  // namespace

struct HtabState {
  uint64_t index = 0;
  uint64_t flags = 0;
  bool first_pass = true;
};

// The anon-inode file of kvm_vm_ioctl_get_htab_fd(). Must not outlive its model.
class HtabCtx final : public ppc::HtabFile {
 public:
  HtabCtx(PpcModel* vm, const ppc::HtabFdArgs& args) : vm_(vm) {
    st_.index = args.start_index;
    st_.flags = args.flags;
    write_ = args.flags & ppc::kHtabWrite;
    if (!write_) ++vm_->hpte_mod_interest_;
  }
  ~HtabCtx() override {  // kvm_htab_release()
    if (!write_) --vm_->hpte_mod_interest_;
  }
  ssize_t Read(void* buf, size_t len) override {
    if (write_) return -EBADF;  // opened O_WRONLY
    Fault f;
    if (vm_->Inject("read", &f)) {
      if (f.err) return -f.err;
      if (f.short_len < len) len = f.short_len;
    }
    return vm_->HtabRead(st_, static_cast<uint8_t*>(buf), len);
  }
  ssize_t Write(const void* buf, size_t len) override {
    if (!write_) return -EBADF;  // opened O_RDONLY
    Fault f;
    if (vm_->Inject("write", &f)) {
      if (f.err) return -f.err;
      len = RecordBoundary(static_cast<const uint8_t*>(buf), len, f.short_len);
    }
    return vm_->HtabWrite(static_cast<const uint8_t*>(buf), len);
  }

 private:
  // A short write is the kernel consuming fewer whole records than it was
  // given: the end of the last whole record within `limit` bytes (at least
  // the first record, which the kernel always takes when it fits in len).
  static size_t RecordBoundary(const uint8_t* buf, size_t len, size_t limit) {
    size_t off = 0;
    while (off + sizeof(ppc::HtabHeader) <= len) {
      ppc::HtabHeader hdr;
      std::memcpy(&hdr, buf + off, sizeof(hdr));
      size_t end = off + sizeof(hdr) + hdr.n_valid * ppc::kHpteSize;
      if (end > len || (off > 0 && end > limit)) break;
      off = end;
    }
    return off;
  }
  PpcModel* vm_;
  HtabState st_;
  bool write_;
};

PpcModel::PpcModel(uint32_t order) : order_(order), hpt_(uint64_t{1} << (order - 4)) {}
PpcModel::~PpcModel() = default;

bool PpcModel::Inject(const char* op, Fault* f) { return faults_.Take(op, f); }

PpcModelVcpu& PpcModel::CreateVcpu(uint32_t pvr) {
  vcpus_.push_back(std::make_unique<PpcModelVcpu>(this, pvr));
  return *vcpus_.back();
}

// kvmppc_do_h_enter() with H_EXACT, reduced to what the HTAB stream sees.
void PpcModel::GuestEnter(uint64_t index, uint64_t v, uint64_t r) {
  Hpte& e = hpt_.at(index);
  e.v = v & ~kHpteVHvlock;
  e.hr = r & ~ppc::kHpteGrModified;
  e.guest_rpte = e.hr;
  NoteModification(e);
}

// kvmppc_do_h_remove().
void PpcModel::GuestRemove(uint64_t index) {
  Hpte& e = hpt_.at(index);
  e.v = 0;
  NoteModification(e);
}

void PpcModel::HardwareSetRc(uint64_t index, uint64_t rc_bits) { hpt_.at(index).hr |= rc_bits & kRc; }

std::map<uint64_t, std::pair<uint64_t, uint64_t>> PpcModel::GuestView() const {
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> out;
  for (uint64_t i = 0; i < hpt_.size(); ++i) {
    const Hpte& e = hpt_[i];
    if (!(e.v & (ppc::kHpteVValid | ppc::kHpteVAbsent))) continue;
    uint64_t v = (e.v & ~ppc::kHpteVAbsent) | ppc::kHpteVValid;
    // R/C the hardware set are part of the guest view once harvested; a
    // reader harvests them, so count them here too.
    uint64_t r = (e.guest_rpte | (e.hr & kRc)) & ~ppc::kHpteGrModified;
    out[i] = {v, r};
  }
  return out;
}

// hpte_dirty(): modified since last read, or R/C set by the hardware that the
// guest view lacks.
bool PpcModel::HpteDirty(const Hpte& e) const {
  if (e.guest_rpte & ppc::kHpteGrModified) return true;
  uint64_t rcbits_unset = ~e.guest_rpte & kRc;
  return (e.v & ppc::kHpteVValid) && (e.hr & rcbits_unset);
}

// record_hpte(): whether entry `e` belongs in the current run (valid or
// invalid as `want_valid` says); fills out[] (host order) and clears the
// modified flag of what it reports.
int PpcModel::RecordHpte(uint64_t flags, Hpte& e, uint64_t out[2], bool want_valid,
                         bool first_pass) {
  bool dirty = HpteDirty(e);
  if (!first_pass && !dirty) return 0;
  bool valid = false;
  if (e.v & (ppc::kHpteVValid | ppc::kHpteVAbsent)) {
    valid = true;
    if ((flags & ppc::kHtabBoltedOnly) && !(e.v & ppc::kHpteVBolted)) valid = false;
  }
  if (valid != want_valid) return 0;

  uint64_t v = 0, r = 0;
  int ok = 1;
  if (valid || dirty) {
    v = e.v | kHpteVHvlock;  // read under the HPTE lock
    valid = v & ppc::kHpteVValid;
    dirty = e.guest_rpte & ppc::kHpteGrModified;
    uint64_t rcbits_unset = ~e.guest_rpte & kRc;
    if (valid && (rcbits_unset & e.hr)) {  // harvest R/C into the guest view
      e.guest_rpte |= (e.hr & kRc) | ppc::kHpteGrModified;
      dirty = true;
    }
    if (v & ppc::kHpteVAbsent) {
      v = (v & ~ppc::kHpteVAbsent) | ppc::kHpteVValid;
      valid = true;
    }
    if ((flags & ppc::kHtabBoltedOnly) && !(v & ppc::kHpteVBolted)) valid = false;
    r = e.guest_rpte;
    if (valid == want_valid && dirty) {
      r &= ~ppc::kHpteGrModified;
      e.guest_rpte = r;
    }
    if (!(valid == want_valid && (first_pass || dirty))) ok = 0;
  }
  out[0] = v;
  out[1] = r;
  return ok;
}

// kvm_htab_read(). Records need more than a header and one HPTE of room
// (strict comparisons, as in the kernel), so a read of 24 bytes or fewer
// returns 0. A pass ends at the end of the table: the read returns there, and
// the next one starts a non-first pass at index 0 that skips clean entries.
ssize_t PpcModel::HtabRead(HtabState& ctx, uint8_t* buf, size_t count) {
  constexpr size_t kHdr = sizeof(ppc::HtabHeader);
  if (!user_.Ok(reinterpret_cast<uintptr_t>(buf), count)) return -EFAULT;  // access_ok
  const bool first_pass = ctx.first_pass;
  const uint64_t flags = ctx.flags;
  const uint64_t npte = hpt_.size();
  uint64_t i = ctx.index;
  size_t nb = 0;
  uint8_t* out = buf;
  while (nb + kHdr + ppc::kHpteSize < count) {
    ppc::HtabHeader hdr{0, 0, 0};
    uint8_t* hptr = out;
    size_t nw = nb;
    nb += kHdr;
    uint8_t* lbuf = out + kHdr;
    if (!first_pass) {
      while (i < npte && !HpteDirty(hpt_[i])) ++i;
    }
    hdr.index = static_cast<uint32_t>(i);
    uint64_t hpte[2];
    while (i < npte && hdr.n_valid < 0xffff && nb + ppc::kHpteSize < count &&
           RecordHpte(flags, hpt_[i], hpte, true, first_pass)) {
      ++hdr.n_valid;
      uint64_t be[2] = {htobe64(hpte[0]), htobe64(hpte[1])};
      std::memcpy(lbuf, be, sizeof(be));
      nb += ppc::kHpteSize;
      lbuf += ppc::kHpteSize;
      ++i;
    }
    while (i < npte && hdr.n_invalid < 0xffff &&
           RecordHpte(flags, hpt_[i], hpte, false, first_pass)) {
      ++hdr.n_invalid;
      ++i;
    }
    if (hdr.n_valid || hdr.n_invalid) {
      std::memcpy(hptr, &hdr, kHdr);
      out = lbuf;
    } else {
      nb = nw;
    }
    if (i >= npte) {  // wrapped around the table
      i = 0;
      ctx.first_pass = false;
      break;
    }
  }
  ctx.index = i;
  return static_cast<ssize_t>(nb);
}

// kvm_htab_write(): each record's valid HPTEs are entered at exactly their
// index (replacing what is there), then n_invalid entries are removed.
// Returns the bytes consumed; a record whose HPTEs are not all in the buffer
// is left for the next write.
ssize_t PpcModel::HtabWrite(const uint8_t* buf, size_t count) {
  constexpr size_t kHdr = sizeof(ppc::HtabHeader);
  if (!user_.Ok(reinterpret_cast<uintptr_t>(buf), count)) return -EFAULT;  // access_ok
  if (vcpus_running_) return -EBUSY;
  const uint64_t npte = hpt_.size();
  size_t nb = 0;
  const uint8_t* p = buf;
  while (nb + kHdr <= count) {
    ppc::HtabHeader hdr;
    std::memcpy(&hdr, p, kHdr);
    // The kernel's check leaves out the header's own 8 bytes; its HPTE reads
    // may then run past `count`. The model cannot read past the buffer it was
    // given and reports that as the fault it would be on unmapped memory.
    if (nb + hdr.n_valid * ppc::kHpteSize > count) break;
    nb += kHdr;
    p += kHdr;
    uint64_t i = hdr.index;
    if (i >= npte || i + hdr.n_valid + hdr.n_invalid > npte) return -EINVAL;
    for (unsigned j = 0; j < hdr.n_valid; ++j) {
      if (nb + ppc::kHpteSize > count) return -EFAULT;
      uint64_t be[2];
      std::memcpy(be, p, sizeof(be));
      uint64_t v = be64toh(be[0]), r = be64toh(be[1]);
      if (!(v & ppc::kHpteVValid)) return -EINVAL;
      p += ppc::kHpteSize;
      nb += ppc::kHpteSize;
      // kvmppc_virtmode_do_h_enter(H_EXACT) after removing what was there.
      Hpte& e = hpt_[i];
      e.v = v & ~kHpteVHvlock;
      e.hr = r & ~ppc::kHpteGrModified;
      e.guest_rpte = e.hr;
      NoteModification(e);
      ++i;
    }
    for (unsigned j = 0; j < hdr.n_invalid; ++j) {
      Hpte& e = hpt_[i];
      if (e.v & (ppc::kHpteVValid | ppc::kHpteVAbsent)) {
        e.v = 0;
        NoteModification(e);
      }
      ++i;
    }
  }
  return static_cast<ssize_t>(nb);
}

// kvm_vm_ioctl_get_htab_fd().
int PpcModel::GetHtabFd(const ppc::HtabFdArgs& args, std::unique_ptr<ppc::HtabFile>* out) {
  Fault f;
  if (Inject("KVM_PPC_GET_HTAB_FD", &f) && f.err) return -f.err;
  if (args.flags & ~(ppc::kHtabBoltedOnly | ppc::kHtabWrite)) return -EINVAL;
  *out = std::make_unique<HtabCtx>(this, args);
  return 0;
}

// KVM_PPC_ALLOCATE_HTAB -> kvmppc_alloc_reset_hpt(): a new, empty table.
int PpcModel::AllocateHtab(uint32_t* order) {
  Fault f;
  if (Inject("KVM_PPC_ALLOCATE_HTAB", &f) && f.err) return -f.err;
  if (!user_.Ok(reinterpret_cast<uintptr_t>(order), sizeof(*order))) return -EFAULT;
  uint32_t o = *order ? *order : 24;  // kvm_hpt_order default
  if (o < ppc::kMinHptOrder || o > ppc::kMaxHptOrder) return -EINVAL;
  if (o > 28) return -ENOMEM;  // the model keeps the table in memory: cap it at 256 MiB
  if (vcpus_running_) return -EBUSY;
  order_ = o;
  hpt_.assign(uint64_t{1} << (o - 4), Hpte{});
  *order = o;
  return 0;
}

// ---- vCPU (book3s_hv.c) ----

bool PpcModelVcpu::Inject(const char* op, int* ret) {
  Fault f;
  if (!vm_->Inject(op, &f) || f.err == 0) return false;
  *ret = -f.err;
  return true;
}

int PpcModelVcpu::GetRegs(ppc::Regs* regs) {
  int ret;
  if (Inject("KVM_GET_REGS", &ret)) return ret;
  *regs = state_.regs;
  return 0;
}
int PpcModelVcpu::SetRegs(const ppc::Regs& regs) {
  int ret;
  if (Inject("KVM_SET_REGS", &ret)) return ret;
  state_.regs = regs;
  return 0;
}

// kvm_arch_vcpu_ioctl_get_sregs_hv(): the PVR and the SLB entries in use,
// each ESID with its slot number ORed into the low bits.
int PpcModelVcpu::GetSregs(ppc::Sregs* sregs) {
  int ret;
  if (Inject("KVM_GET_SREGS", &ret)) return ret;
  std::memset(sregs, 0, sizeof(*sregs));
  sregs->pvr = pvr_;
  // HV KVM leaves sdr1 zero (the HPT belongs to the VM); the model reports
  // what was set, as PR KVM does, so capture and restore of it are covered.
  sregs->u.s.sdr1 = state_.sdr1;
  for (size_t i = 0; i < state_.slb.size(); ++i) {
    sregs->u.s.slb[i].slbe = state_.slb[i].slbe | i;
    sregs->u.s.slb[i].slbv = state_.slb[i].slbv;
  }
  return 0;
}

// kvm_arch_vcpu_ioctl_set_sregs_hv(): only for the vCPU's own PVR; the valid
// entries (SLB_ESID_V) are packed to the front, up to slb_nr (32).
int PpcModelVcpu::SetSregs(const ppc::Sregs& sregs) {
  int ret;
  if (Inject("KVM_SET_SREGS", &ret)) return ret;
  if (sregs.pvr != pvr_) return -EINVAL;
  state_.slb.clear();
  for (int i = 0; i < 32; ++i) {
    if (sregs.u.s.slb[i].slbe & ppc::kSlbEsidValid) state_.slb.push_back(sregs.u.s.slb[i]);
  }
  state_.sdr1 = sregs.u.s.sdr1;
  return 0;
}

namespace {
bool KnownOneReg(uint64_t id) {
  if (id >= ppc::kRegFpr0 && id < ppc::kRegFpr0 + 32) return true;
  if (id >= ppc::kRegVr0 && id < ppc::kRegVr0 + 32) return true;
  if (id >= ppc::kRegVsr0 && id < ppc::kRegVsr0 + 32) return true;
  for (const auto& d : ppc::kSprs) {
    if (d.id == id) return true;
  }
  return false;
}
}  // namespace

// kvm_vcpu_ioctl_get_one_reg(): unknown ids are -EINVAL; the size comes from
// the id; unset registers read as zero.
int PpcModelVcpu::GetOneReg(const kvm_one_reg& reg) {
  int ret;
  if (Inject("KVM_GET_ONE_REG", &ret)) return ret;
  if (!KnownOneReg(reg.id)) return -EINVAL;
  size_t n = ppc::OneRegSize(reg.id);
  if (!vm_->user_.Ok(reg.addr, n)) return -EFAULT;
  auto it = state_.one_regs.find(reg.id);
  if (it == state_.one_regs.end()) {
    std::memset(reinterpret_cast<void*>(reg.addr), 0, n);
  } else {
    std::memcpy(reinterpret_cast<void*>(reg.addr), it->second.data(), n);
  }
  return 0;
}
int PpcModelVcpu::SetOneReg(const kvm_one_reg& reg) {
  int ret;
  if (Inject("KVM_SET_ONE_REG", &ret)) return ret;
  if (!KnownOneReg(reg.id)) return -EINVAL;
  size_t n = ppc::OneRegSize(reg.id);
  if (!vm_->user_.Ok(reg.addr, n)) return -EFAULT;
  const auto* p = reinterpret_cast<const uint8_t*>(reg.addr);
  std::vector<uint8_t> bytes(p, p + n);
  if (std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; })) {
    state_.one_regs.erase(reg.id);  // zero is the reset value: keep storage canonical
  } else {
    state_.one_regs[reg.id] = std::move(bytes);
  }
  return 0;
}

// arch/powerpc/kvm/powerpc.c: POWER has no MP state ioctls; both are -EINVAL.
int PpcModelVcpu::GetMpState(kvm_mp_state*) { return -EINVAL; }
int PpcModelVcpu::SetMpState(const kvm_mp_state&) { return -EINVAL; }

bool operator==(const PpcModelVcpu::State& a, const PpcModelVcpu::State& b) {
  if (std::memcmp(&a.regs, &b.regs, sizeof(a.regs)) != 0) return false;
  if (a.sdr1 != b.sdr1 || a.one_regs != b.one_regs) return false;
  if (a.slb.size() != b.slb.size()) return false;
  for (size_t i = 0; i < a.slb.size(); ++i) {
    if (a.slb[i].slbe != b.slb[i].slbe || a.slb[i].slbv != b.slb[i].slbv) return false;
  }
  return true;
}

}  // namespace vmsnap::kvm::model
