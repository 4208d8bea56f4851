// SPDX-License-Identifier: MIT
// ppc64 capture: see ppc64_capture.h.
#include "capture/ppc64/ppc64_capture.h"

#include <endian.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

namespace vmsnap::capture::ppc64 {
namespace kp = kvm::ppc;

Result<std::unique_ptr<HtabReader>> HtabReader::Open(kp::Vm& vm, const Options& options) {
  kp::HtabFdArgs args{};
  args.flags = options.bolted_only ? kp::kHtabBoltedOnly : 0;
  args.start_index = 0;
  std::unique_ptr<kp::HtabFile> fd;
  int rc = kp::RetryEintr([&] { return vm.GetHtabFd(args, &fd); });
  VMSNAP_RETURN_IF_ERROR(kp::IoctlStatus(rc, "KVM_PPC_GET_HTAB_FD"));
  return std::unique_ptr<HtabReader>(new HtabReader(std::move(fd), options));
}

Status HtabReader::Apply(const uint8_t* data, size_t len) {
  size_t off = 0;
  while (off < len) {
    if (len - off < sizeof(kp::HtabHeader))
      return Status::Kvm("HTAB read: truncated record header at byte " + std::to_string(off));
    kp::HtabHeader hdr;
    std::memcpy(&hdr, data + off, sizeof(hdr));  // host-endian
    off += sizeof(hdr);
    if ((len - off) / kp::kHpteSize < hdr.n_valid)
      return Status::Kvm("HTAB read: record at index " + std::to_string(hdr.index) + " claims " +
                         std::to_string(hdr.n_valid) + " HPTEs past the end of the data");
    uint64_t i = hdr.index;
    for (unsigned j = 0; j < hdr.n_valid; ++j, ++i) {
      uint64_t be[2];
      std::memcpy(be, data + off, sizeof(be));
      off += kp::kHpteSize;
      entries_[i] = {be64toh(be[0]) & ~kp::kHpteVHvlock, be64toh(be[1])};
    }
    // Entries the record declares invalid are gone (or never were).
    entries_.erase(entries_.lower_bound(i), entries_.lower_bound(i + hdr.n_invalid));
    i += hdr.n_invalid;
    table_end_ = std::max(table_end_, i);
  }
  return Status::Ok();
}

// As QEMU's kvmppc_save_htab: read until read() returns 0, which the kernel
// does once a pass found nothing (more) to report.
Status HtabReader::Pass(unsigned max_reads) {
  // A record needs more than a header plus one HPTE of room; smaller reads
  // always return 0 and would look like "done".
  std::vector<uint8_t> buf(std::max<size_t>(options_.read_buffer, 4096));
  for (unsigned n = 0; max_reads == 0 || n < max_reads; ++n) {
    ssize_t r = kp::RetryEintr([&] { return fd_->Read(buf.data(), buf.size()); });
    ++reads_;
    if (r < 0) return kp::IoctlStatus(r, "read(KVM_PPC_GET_HTAB_FD fd)");
    if (r == 0) return Status::Ok();
    VMSNAP_RETURN_IF_ERROR(Apply(buf.data(), static_cast<size_t>(r)));
  }
  return Status::Ok();
}

Status HtabReader::Fill(schema::ppc::Htab::Builder out) const {
  uint32_t shift = options_.htab_shift;
  if (shift == 0) {
    // The first pass reports every index, valid or not, up to the end.
    if (table_end_ == 0 || !std::has_single_bit(table_end_))
      return Status::Kvm("HTAB read: the first pass covered " + std::to_string(table_end_) +
                         " entries, not a power of two; cannot tell the table size");
    shift = static_cast<uint32_t>(std::countr_zero(table_end_)) + 4;  // 16-byte HPTEs
  }
  if (shift < kp::kMinHptOrder || shift > kp::kMaxHptOrder)
    return Status::Kvm("HTAB size 2^" + std::to_string(shift) + " is outside 2^18..2^46");
  if (table_end_ > (uint64_t{1} << (shift - 4)))
    return Status::Kvm("HTAB read: an entry lies beyond a table of 2^" + std::to_string(shift) + " bytes");
  out.setShift(shift);
  out.setBoltedOnly(options_.bolted_only);
  auto list = out.initEntries(static_cast<unsigned>(entries_.size()));
  unsigned k = 0;
  for (const auto& [index, vr] : entries_) {
    list[k].setIndex(static_cast<uint32_t>(index));
    list[k].setV(vr.first);
    list[k].setR(vr.second);
    ++k;
  }
  return Status::Ok();
}

namespace {

// ONE_REG values come in host byte order; `wide` ones are stored
// little-endian so a file reads the same on every host.
void StoreOneReg(schema::ppc::OneReg::Builder out, uint64_t id, const std::string& name,
                 const uint8_t* bytes) {
  out.setId(id);
  out.setName(name);
  size_t n = kp::OneRegSize(id);
  if (n == 4) {
    uint32_t v;
    std::memcpy(&v, bytes, 4);
    out.setValue(v);
  } else if (n == 8) {
    uint64_t v;
    std::memcpy(&v, bytes, 8);
    out.setValue(v);
  } else {
    std::vector<uint8_t> le(bytes, bytes + n);
    if constexpr (std::endian::native == std::endian::big) std::reverse(le.begin(), le.end());
    out.setWide(kj::arrayPtr(le.data(), le.size()));
  }
}

struct RegId {
  uint64_t id;
  std::string name;
};

std::vector<RegId> OneRegList() {
  std::vector<RegId> ids;
  for (int i = 0; i < 32; ++i) ids.push_back({kp::kRegFpr0 + i, "fpr" + std::to_string(i)});
  for (int i = 0; i < 32; ++i) ids.push_back({kp::kRegVr0 + i, "vr" + std::to_string(i)});
  // After the FPRs: each VSR's high half is the FPR, so a restore in this
  // order ends with the complete VSX state.
  for (int i = 0; i < 32; ++i) ids.push_back({kp::kRegVsr0 + i, "vsr" + std::to_string(i)});
  for (const auto& d : kp::kSprs) ids.push_back({d.id, d.name});
  return ids;
}

}  // namespace

Status CaptureVcpu(kp::Vcpu& vcpu, schema::ppc::Vcpu::Builder out) {
  // POWER has no MP state ioctls (they are -EINVAL); mpState stays 0.
  kp::Regs regs{};
  VMSNAP_RETURN_IF_ERROR(kp::IoctlStatus(kp::RetryEintr([&] { return vcpu.GetRegs(&regs); }), "KVM_GET_REGS"));
  out.setPc(regs.pc);
  out.setCr(regs.cr);
  out.setCtr(regs.ctr);
  out.setLr(regs.lr);
  out.setXer(regs.xer);
  out.setMsr(regs.msr);
  out.setSrr0(regs.srr0);
  out.setSrr1(regs.srr1);
  out.setPid(regs.pid);
  const uint64_t sprg[8] = {regs.sprg0, regs.sprg1, regs.sprg2, regs.sprg3,
                            regs.sprg4, regs.sprg5, regs.sprg6, regs.sprg7};
  auto sl = out.initSprg(8);
  for (unsigned i = 0; i < 8; ++i) sl.set(i, sprg[i]);
  auto gl = out.initGpr(32);
  for (unsigned i = 0; i < 32; ++i) gl.set(i, regs.gpr[i]);

  kp::Sregs sregs{};
  VMSNAP_RETURN_IF_ERROR(kp::IoctlStatus(kp::RetryEintr([&] { return vcpu.GetSregs(&sregs); }), "KVM_GET_SREGS"));
  out.setPvr(sregs.pvr);
  out.setSdr1(sregs.u.s.sdr1);
  unsigned valid = 0;
  for (const auto& e : sregs.u.s.slb) valid += (e.slbe & kp::kSlbEsidValid) ? 1 : 0;
  auto slb = out.initSlb(valid);
  unsigned k = 0;
  for (const auto& e : sregs.u.s.slb) {
    if (!(e.slbe & kp::kSlbEsidValid)) continue;
    slb[k].setEsid(e.slbe);
    slb[k].setVsid(e.slbv);
    ++k;
  }

  struct Got {
    RegId reg;
    uint8_t bytes[16];
  };
  std::vector<Got> got;
  for (const RegId& r : OneRegList()) {
    Got g{r, {}};
    kvm_one_reg one{r.id, reinterpret_cast<uintptr_t>(g.bytes)};
    int rc = kp::RetryEintr([&] { return vcpu.GetOneReg(one); });
    if (rc == -EINVAL || rc == -ENOENT) continue;  // not on this CPU or kernel, as QEMU tolerates
    VMSNAP_RETURN_IF_ERROR(kp::IoctlStatus(rc, "KVM_GET_ONE_REG " + r.name));
    got.push_back(g);
  }
  auto regs_out = out.initOneRegs(static_cast<unsigned>(got.size()));
  for (size_t i = 0; i < got.size(); ++i) StoreOneReg(regs_out[i], got[i].reg.id, got[i].reg.name, got[i].bytes);
  return Status::Ok();
}

Status CaptureManifest(kp::Vm& vm, std::span<kp::Vcpu* const> vcpus, const Options& options,
                       schema::Manifest::Builder manifest, HtabReader* live) {
  manifest.setArch(schema::Arch::PPC64);
  auto out_vcpus = manifest.initVcpus(static_cast<unsigned>(vcpus.size()));
  for (size_t i = 0; i < vcpus.size(); ++i) {
    out_vcpus[i].setId(static_cast<uint32_t>(i));
    Status s = CaptureVcpu(*vcpus[i], out_vcpus[i].initPpc64());
    if (!s.ok()) return s.Context("vCPU " + std::to_string(i)).Context("ppc64 capture");
  }
  auto htab = manifest.initVm().initPpc64().initHtab();
  if (live) {
    VMSNAP_RETURN_IF_ERROR(live->Pass());  // final pass with the guest stopped
    return live->Fill(htab);
  }
  VMSNAP_ASSIGN_OR_RETURN(auto reader, HtabReader::Open(vm, options));
  VMSNAP_RETURN_IF_ERROR(reader->Pass());
  return reader->Fill(htab);
}

}  // namespace vmsnap::capture::ppc64
