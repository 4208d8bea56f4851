// SPDX-License-Identifier: MIT
// The s390 kernel model: see s390_model.h. Each function names the kernel
// function it follows; deviations are commented.
#include "tests/model/kernel/s390_model.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace vmsnap::kvm::model {
namespace {

// kvm-s390.c: clean values worth sending rather than starting a new block
// (a block costs a start address and a length: two longs).
constexpr uint64_t kMaxBitDistance = 2 * sizeof(uint64_t);

uint64_t FindNextBit(const std::vector<bool>& bits, uint64_t size, uint64_t offset) {
  for (uint64_t i = offset; i < size; ++i) {
    if (bits[i]) return i;
  }
  return size;
}

}  // namespace

S390Model::S390Model(bool has_cmma) : has_cmma_(has_cmma) {}
S390Model::~S390Model() = default;

bool S390Model::Inject(const char* op, int* ret) {
  Fault f;
  if (!faults_.Take(op, &f) || f.err == 0) return false;
  *ret = -f.err;
  return true;
}

void S390Model::AddSlot(uint64_t base_gfn, uint64_t npages, bool log_dirty) {
  Slot s;
  s.base_gfn = base_gfn;
  s.npages = npages;
  s.log_dirty = log_dirty;
  s.cmma.assign(npages, 0);
  s.skeys.assign(npages, 0);
  s.cmma_dirty.assign(npages, false);
  slots_.push_back(std::move(s));
  std::sort(slots_.begin(), slots_.end(),
            [](const Slot& a, const Slot& b) { return a.base_gfn > b.base_gfn; });
}

S390ModelVcpu& S390Model::CreateVcpu() {
  vcpus_.push_back(std::make_unique<S390ModelVcpu>(this));
  return *vcpus_.back();
}

S390Model::Slot* S390Model::SlotOf(uint64_t gfn) {
  for (auto& s : slots_) {
    if (gfn >= s.base_gfn && gfn - s.base_gfn < s.npages) return &s;
  }
  return nullptr;
}
const S390Model::Slot* S390Model::SlotOf(uint64_t gfn) const {
  return const_cast<S390Model*>(this)->SlotOf(gfn);
}

uint8_t S390Model::cmma(uint64_t gfn) const {
  const Slot* s = SlotOf(gfn);
  return s ? s->cmma[gfn - s->base_gfn] : 0;
}
uint8_t S390Model::skey(uint64_t gfn) const {
  const Slot* s = SlotOf(gfn);
  return s ? s->skeys[gfn - s->base_gfn] : 0;
}
bool S390Model::cmma_dirty(uint64_t gfn) const {
  const Slot* s = SlotOf(gfn);
  return s && s->cmma_dirty[gfn - s->base_gfn];
}

// priv.c do_essa(): the guest changes a page's state; while migrating, the
// page is marked in the second dirty bitmap and counted once.
void S390Model::GuestSetCmma(uint64_t gfn, uint8_t value) {
  Slot* s = SlotOf(gfn);
  if (!s) return;
  s->cmma[gfn - s->base_gfn] = value & s390::kCmmaValueBits;
  uses_cmm_ = true;
  if (migration_mode_ && !s->cmma_dirty[gfn - s->base_gfn]) {
    s->cmma_dirty[gfn - s->base_gfn] = true;
    ++cmma_dirty_pages_;
  }
}

void S390Model::GuestSetStorageKey(uint64_t gfn, uint8_t key) {
  Slot* s = SlotOf(gfn);
  if (!s) return;
  uses_skeys_ = true;  // s390_enable_skey() on the first key instruction
  s->skeys[gfn - s->base_gfn] = key & 0xfe;
}

// gfn_to_memslot_approx(): index of the slot holding gfn, or of one bordering
// the hole gfn falls in (the highest slot whose base is <= gfn; the lowest
// slot when gfn is below every slot).
int S390Model::SlotApprox(uint64_t gfn) const {
  int start = 0, end = static_cast<int>(slots_.size());
  while (start < end) {
    int mid = start + (end - start) / 2;
    if (gfn >= slots_[mid].base_gfn) {
      end = mid;
    } else {
      start = mid + 1;
    }
  }
  if (start >= static_cast<int>(slots_.size())) return static_cast<int>(slots_.size()) - 1;
  return start;
}

// kvm_s390_next_dirty_cmma(): the first dirty gfn at or after cur_gfn, moving
// up through the slots; above the highest slot it wraps to the lowest one.
// When nothing is dirty it returns the end of the highest slot.
uint64_t S390Model::NextDirty(uint64_t cur_gfn) const {
  int idx = SlotApprox(cur_gfn);
  const Slot* ms = &slots_[idx];
  uint64_t ofs = cur_gfn - ms->base_gfn;  // wraps when cur_gfn is below the slot, as in the kernel
  if (ms->base_gfn + ms->npages <= cur_gfn) {
    --idx;
    if (idx < 0) idx = static_cast<int>(slots_.size()) - 1;
    ms = &slots_[idx];
    ofs = 0;
  }
  ofs = FindNextBit(ms->cmma_dirty, ms->npages, ofs);
  while (idx > 0 && ofs >= ms->npages) {
    --idx;
    ms = &slots_[idx];
    ofs = FindNextBit(ms->cmma_dirty, ms->npages, 0);
  }
  return ms->base_gfn + ofs;
}

// kvm_s390_peek_cmma(): values from start_gfn on, without side effects; an
// error only if the very first gfn is outside guest memory.
int S390Model::PeekCmma(s390::CmmaLog* args, uint8_t* res, uint64_t bufsize) {
  uint64_t cur = args->start_gfn;
  args->count = 0;
  while (args->count < bufsize) {
    const Slot* s = SlotOf(cur);
    if (!s) return args->count ? 0 : -EFAULT;
    res[args->count++] = s->cmma[cur - s->base_gfn];
    ++cur;
  }
  return 0;
}

// kvm_s390_get_cmma(): from the first dirty page at or after start_gfn,
// values (clearing their dirty bits) until the next dirty page is more than
// kMaxBitDistance away, memory or the buffer ends, or a hole is reached.
int S390Model::GetCmma(s390::CmmaLog* args, uint8_t* res, uint64_t bufsize) {
  if (slots_.empty()) return 0;
  uint64_t cur = NextDirty(args->start_gfn);
  Slot* ms = SlotOf(cur);
  args->count = 0;
  args->start_gfn = cur;
  if (!ms) return 0;
  uint64_t next = NextDirty(cur + 1);
  const uint64_t mem_end = slots_[0].base_gfn + slots_[0].npages;

  while (args->count < bufsize) {
    Slot* s = SlotOf(cur);
    if (!s) return 0;
    uint64_t ofs = cur - ms->base_gfn;
    if (ms->cmma_dirty[ofs]) {  // decrement only if the bit really flips
      ms->cmma_dirty[ofs] = false;
      --cmma_dirty_pages_;
    }
    res[args->count++] = s->cmma[cur - s->base_gfn];
    if (next > cur + kMaxBitDistance) return 0;
    if (cur == next) next = NextDirty(cur + 1);
    // Unsigned on purpose: a `next` that wrapped below start_gfn ends the block.
    if (next >= mem_end || next - args->start_gfn >= bufsize) return 0;
    ++cur;
    if (cur - ms->base_gfn >= ms->npages) {
      ms = SlotOf(cur);
      if (!ms) return 0;
    }
  }
  return 0;
}

// kvm_s390_get_cmma_bits().
int S390Model::GetCmmaBits(s390::CmmaLog* args) {
  int ret;
  if (Inject("KVM_S390_GET_CMMA_BITS", &ret)) return ret;
  if (!use_cmma_) return -ENXIO;
  if (args->flags & ~s390::kCmmaPeek) return -EINVAL;
  const bool peek = args->flags & s390::kCmmaPeek;
  if (!peek && !migration_mode_) return -EINVAL;
  uint64_t bufsize = std::min<uint64_t>(args->count, s390::kCmmaSizeMax);
  if (!bufsize || !uses_cmm_) {
    std::memset(args, 0, sizeof(*args));  // the kernel clears the whole struct, values too
    return 0;
  }
  if (!peek && !cmma_dirty_pages_) {
    std::memset(args, 0, sizeof(*args));
    return 0;
  }
  if (Inject("vmalloc", &ret)) return ret;  // the kernel's buffer allocation (ENOMEM)
  std::vector<uint8_t> values(bufsize);
  ret = peek ? PeekCmma(args, values.data(), bufsize) : GetCmma(args, values.data(), bufsize);
  args->remaining = migration_mode_ ? cmma_dirty_pages_ : 0;
  // Copied out last: on a bad buffer the dirty bits are already cleared, as in the kernel.
  if (!user_.Ok(args->values, args->count)) return -EFAULT;
  if (args->count) std::memcpy(reinterpret_cast<void*>(args->values), values.data(), args->count);
  return ret;
}

// kvm_s390_set_cmma_bits(): mask selects PGSTE bits, in PGSTE positions (the
// value byte is shifted left by 24), limited to the usage state and NODAT.
int S390Model::SetCmmaBits(const s390::CmmaLog& args) {
  int ret;
  if (Inject("KVM_S390_SET_CMMA_BITS", &ret)) return ret;
  if (!use_cmma_) return -ENXIO;
  if (args.flags != 0) return -EINVAL;
  if (args.count > s390::kCmmaSizeMax) return -EINVAL;
  if (args.count == 0) return 0;
  if (Inject("vmalloc", &ret)) return ret;
  if (!user_.Ok(args.values, args.count)) return -EFAULT;
  const auto* bits = reinterpret_cast<const uint8_t*>(args.values);
  const uint8_t mask = static_cast<uint8_t>((args.mask >> 24) & s390::kCmmaValueBits);
  int r = 0;
  for (uint64_t i = 0; i < args.count; ++i) {
    Slot* s = SlotOf(args.start_gfn + i);
    if (!s) {
      r = -EFAULT;
      break;
    }
    uint8_t& v = s->cmma[args.start_gfn + i - s->base_gfn];
    v = static_cast<uint8_t>((v & ~mask) | (bits[i] & mask));
  }
  uses_cmm_ = true;  // set even after a partial failure, as the kernel does
  return r;
}

// kvm_s390_get_skeys().
int S390Model::GetSkeys(const s390::Skeys& args) {
  int ret;
  if (Inject("KVM_S390_GET_SKEYS", &ret)) return ret;
  if (args.flags != 0) return -EINVAL;
  if (!uses_skeys_) return s390::kGetSkeysNone;
  if (args.count < 1 || args.count > s390::kSkeysMax) return -EINVAL;
  std::vector<uint8_t> keys(args.count);
  for (uint64_t i = 0; i < args.count; ++i) {
    const Slot* s = SlotOf(args.start_gfn + i);
    if (!s) return -EFAULT;
    keys[i] = s->skeys[args.start_gfn + i - s->base_gfn];
  }
  if (!user_.Ok(args.skeydata_addr, args.count)) return -EFAULT;
  std::memcpy(reinterpret_cast<void*>(args.skeydata_addr), keys.data(), args.count);
  return 0;
}

// kvm_s390_set_skeys(): enables keys for the guest before the first key is
// set; keys before a failing one stay set.
int S390Model::SetSkeys(const s390::Skeys& args) {
  int ret;
  if (Inject("KVM_S390_SET_SKEYS", &ret)) return ret;
  if (args.flags != 0) return -EINVAL;
  if (args.count < 1 || args.count > s390::kSkeysMax) return -EINVAL;
  if (!user_.Ok(args.skeydata_addr, args.count)) return -EFAULT;
  const auto* keys = reinterpret_cast<const uint8_t*>(args.skeydata_addr);
  uses_skeys_ = true;
  for (uint64_t i = 0; i < args.count; ++i) {
    Slot* s = SlotOf(args.start_gfn + i);
    if (!s) return -EFAULT;
    if (keys[i] & 0x01) return -EINVAL;  // lowest-order bit is reserved
    s->skeys[args.start_gfn + i - s->base_gfn] = keys[i];
  }
  return 0;
}

// kvm_s390_vm_start_migration(): every page of every slot becomes dirty.
int S390Model::StartMigration() {
  if (migration_mode_) return 0;
  if (slots_.empty()) return -EINVAL;
  if (!use_cmma_) {
    migration_mode_ = true;
    return 0;
  }
  uint64_t ram_pages = 0;
  for (auto& s : slots_) {
    if (!s.log_dirty) return -EINVAL;  // no dirty bitmap to borrow the second half of
    std::fill(s.cmma_dirty.begin(), s.cmma_dirty.end(), true);
    ram_pages += s.npages;
  }
  cmma_dirty_pages_ = ram_pages;
  migration_mode_ = true;
  return 0;
}

int S390Model::SetMemCtrl(const kvm_device_attr& attr) {
  switch (attr.attr) {
    case s390::kVmMemEnableCmma:
      if (!has_cmma_) return -ENXIO;
      if (!vcpus_.empty()) return -EBUSY;
      use_cmma_ = true;
      return 0;
    case s390::kVmMemClrCmma:
      if (!has_cmma_) return -ENXIO;
      if (!use_cmma_) return -EINVAL;
      for (auto& s : slots_) std::fill(s.cmma.begin(), s.cmma.end(), 0);
      return 0;
    default:
      return -ENXIO;
  }
}

// kvm_s390_set_tod()/get_tod(): the model's TOD does not advance on its own.
int S390Model::SetTod(const kvm_device_attr& attr) {
  if (attr.flags) return -EINVAL;
  switch (attr.attr) {
    case s390::kVmTodHigh: {
      if (!user_.Ok(attr.addr, 1)) return -EFAULT;
      uint8_t high = *reinterpret_cast<const uint8_t*>(attr.addr);
      return high != 0 ? -EINVAL : 0;
    }
    case s390::kVmTodLow:
      if (!user_.Ok(attr.addr, 8)) return -EFAULT;
      std::memcpy(&tod_low_, reinterpret_cast<const void*>(attr.addr), 8);
      return 0;
    default:
      return -ENXIO;
  }
}

int S390Model::GetTod(const kvm_device_attr& attr) {
  if (attr.flags) return -EINVAL;
  switch (attr.attr) {
    case s390::kVmTodHigh:
      if (!user_.Ok(attr.addr, 1)) return -EFAULT;
      *reinterpret_cast<uint8_t*>(attr.addr) = 0;
      return 0;
    case s390::kVmTodLow:
      if (!user_.Ok(attr.addr, 8)) return -EFAULT;
      std::memcpy(reinterpret_cast<void*>(attr.addr), &tod_low_, 8);
      return 0;
    default:
      return -ENXIO;
  }
}

// kvm_s390_vm_set_attr(), for the groups the model has.
int S390Model::SetAttr(const kvm_device_attr& attr) {
  int ret;
  if (Inject("KVM_SET_DEVICE_ATTR", &ret)) return ret;
  switch (attr.group) {
    case s390::kVmMemCtrl:
      return SetMemCtrl(attr);
    case s390::kVmTod:
      return SetTod(attr);
    case s390::kVmMigration:
      switch (attr.attr) {
        case s390::kVmMigrationStart:
          return StartMigration();
        case s390::kVmMigrationStop:
          // kvm_s390_vm_stop_migration(): the dirty bits stay, but no longer
          // count (remaining reads 0) and START marks everything again.
          migration_mode_ = false;
          return 0;
        default:
          return -ENXIO;
      }
    default:
      return -ENXIO;
  }
}

int S390Model::GetAttr(const kvm_device_attr& attr) {
  int ret;
  if (Inject("KVM_GET_DEVICE_ATTR", &ret)) return ret;
  switch (attr.group) {
    case s390::kVmTod:
      return GetTod(attr);
    case s390::kVmMigration: {
      if (attr.attr != s390::kVmMigrationStatus) return -ENXIO;
      if (!user_.Ok(attr.addr, 8)) return -EFAULT;
      uint64_t mig = migration_mode_ ? 1 : 0;
      std::memcpy(reinterpret_cast<void*>(attr.addr), &mig, 8);
      return 0;
    }
    default:
      return -ENXIO;
  }
}

int S390Model::HasAttr(const kvm_device_attr& attr) {
  switch (attr.group) {
    case s390::kVmMemCtrl:
      if (attr.attr == s390::kVmMemEnableCmma || attr.attr == s390::kVmMemClrCmma)
        return has_cmma_ ? 0 : -ENXIO;
      return -ENXIO;
    case s390::kVmTod:
      return attr.attr == s390::kVmTodLow || attr.attr == s390::kVmTodHigh ? 0 : -ENXIO;
    case s390::kVmMigration:
      return 0;
    default:
      return -ENXIO;
  }
}

// ---- vCPU ----

int S390ModelVcpu::GetRegs(s390::Regs* regs) {
  int ret;
  if (Inject("KVM_GET_REGS", &ret)) return ret;
  *regs = state_.regs;
  return 0;
}
int S390ModelVcpu::SetRegs(const s390::Regs& regs) {
  int ret;
  if (Inject("KVM_SET_REGS", &ret)) return ret;
  state_.regs = regs;
  return 0;
}
int S390ModelVcpu::GetSregs(s390::Sregs* sregs) {
  int ret;
  if (Inject("KVM_GET_SREGS", &ret)) return ret;
  *sregs = state_.sregs;
  return 0;
}
int S390ModelVcpu::SetSregs(const s390::Sregs& sregs) {
  int ret;
  if (Inject("KVM_SET_SREGS", &ret)) return ret;
  state_.sregs = sregs;
  return 0;
}
int S390ModelVcpu::GetFpu(s390::Fpu* fpu) {
  int ret;
  if (Inject("KVM_GET_FPU", &ret)) return ret;
  *fpu = state_.fpu;
  return 0;
}
int S390ModelVcpu::SetFpu(const s390::Fpu& fpu) {
  int ret;
  if (Inject("KVM_SET_FPU", &ret)) return ret;
  state_.fpu = fpu;
  return 0;
}

namespace {
// The ONE_REG registers of kvm_arch_vcpu_ioctl_get/set_one_reg(); any other
// id is -EINVAL.
void* OneRegSlot(S390ModelVcpu::State& s, uint64_t id) {
  switch (id) {
    case s390::kRegTodpr: return &s.todpr;
    case s390::kRegEpochDiff: return &s.epoch_diff;
    case s390::kRegCpuTimer: return &s.cpu_timer;
    case s390::kRegClockComp: return &s.clock_comp;
    case KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x5: return &s.pft;
    case KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x6: return &s.pfc;
    case KVM_REG_S390 | KVM_REG_SIZE_U64 | 0x7: return &s.pfs;
    case s390::kRegPp: return &s.pp;
    case s390::kRegGbea: return &s.gbea;
    default: return nullptr;
  }
}
size_t RegBytes(uint64_t id) { return size_t{1} << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT); }
}  // namespace

int S390ModelVcpu::GetOneReg(const kvm_one_reg& reg) {
  int ret;
  if (Inject("KVM_GET_ONE_REG", &ret)) return ret;
  void* slot = OneRegSlot(state_, reg.id);
  if (!slot) return -EINVAL;
  if (!vm_->user_.Ok(reg.addr, RegBytes(reg.id))) return -EFAULT;
  std::memcpy(reinterpret_cast<void*>(reg.addr), slot, RegBytes(reg.id));
  return 0;
}
int S390ModelVcpu::SetOneReg(const kvm_one_reg& reg) {
  int ret;
  if (Inject("KVM_SET_ONE_REG", &ret)) return ret;
  void* slot = OneRegSlot(state_, reg.id);
  if (!slot) return -EINVAL;
  if (!vm_->user_.Ok(reg.addr, RegBytes(reg.id))) return -EFAULT;
  std::memcpy(slot, reinterpret_cast<const void*>(reg.addr), RegBytes(reg.id));
  return 0;
}

// kvm_arch_vcpu_ioctl_get/set_mpstate(): only STOPPED and OPERATING are
// settable (LOAD only for protected guests, CHECK_STOP not at all).
int S390ModelVcpu::GetMpState(kvm_mp_state* state) {
  int ret;
  if (Inject("KVM_GET_MP_STATE", &ret)) return ret;
  state->mp_state = state_.mp_state;
  return 0;
}
int S390ModelVcpu::SetMpState(const kvm_mp_state& state) {
  int ret;
  if (Inject("KVM_SET_MP_STATE", &ret)) return ret;
  if (state.mp_state != s390::kMpStopped && state.mp_state != s390::kMpOperating) return -ENXIO;
  state_.mp_state = state.mp_state;
  return 0;
}

int S390ModelVcpu::GetPsw(uint64_t* mask, uint64_t* addr) {
  *mask = state_.psw_mask;
  *addr = state_.psw_addr;
  return 0;
}
int S390ModelVcpu::SetPsw(uint64_t mask, uint64_t addr) {
  state_.psw_mask = mask;
  state_.psw_addr = addr;
  return 0;
}
int S390ModelVcpu::GetPrefix(uint32_t* prefix) {
  *prefix = state_.prefix;
  return 0;
}
// kvm_s390_set_prefix(): the prefix is a 8 KiB-aligned address below 2 GiB.
int S390ModelVcpu::SetPrefix(uint32_t prefix) {
  state_.prefix = prefix & 0x7fffe000u;
  return 0;
}

bool operator==(const S390ModelVcpu::State& a, const S390ModelVcpu::State& b) {
  return std::memcmp(&a.regs, &b.regs, sizeof(a.regs)) == 0 &&
         std::memcmp(a.sregs.acrs, b.sregs.acrs, sizeof(a.sregs.acrs)) == 0 &&
         std::memcmp(a.sregs.crs, b.sregs.crs, sizeof(a.sregs.crs)) == 0 &&
         a.fpu.fpc == b.fpu.fpc && std::memcmp(a.fpu.fprs, b.fpu.fprs, sizeof(a.fpu.fprs)) == 0 &&
         a.psw_mask == b.psw_mask && a.psw_addr == b.psw_addr && a.prefix == b.prefix &&
         a.mp_state == b.mp_state && a.todpr == b.todpr && a.cpu_timer == b.cpu_timer &&
         a.clock_comp == b.clock_comp && a.pp == b.pp && a.gbea == b.gbea;
}

}  // namespace vmsnap::kvm::model
