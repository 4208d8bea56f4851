// SPDX-License-Identifier: MIT
// ppc64 restore: see ppc64_restore.h.
#include "restore/ppc64/ppc64_restore.h"

#include <endian.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

namespace vmsnap::restore::ppc64 {
namespace kp = kvm::ppc;

std::vector<std::vector<uint8_t>> EncodeHtab(schema::ppc::Htab::Reader htab) {
  std::vector<std::vector<uint8_t>> records;
  const uint64_t npte = uint64_t{1} << (htab.getShift() - 4);
  auto entries = htab.getEntries();
  size_t k = 0;  // next entry to write
  uint64_t i = 0;
  while (i < npte) {
    kp::HtabHeader hdr{static_cast<uint32_t>(i), 0, 0};
    std::vector<uint8_t> rec(sizeof(hdr));
    while (k < entries.size() && entries[k].getIndex() == i && hdr.n_valid < 0xffff) {
      uint64_t be[2] = {htobe64(entries[k].getV()), htobe64(entries[k].getR())};
      const auto* p = reinterpret_cast<const uint8_t*>(be);
      rec.insert(rec.end(), p, p + sizeof(be));
      ++hdr.n_valid;
      ++k;
      ++i;
    }
    const uint64_t next_valid = k < entries.size() ? entries[k].getIndex() : npte;
    while (i < next_valid && i < npte && hdr.n_invalid < 0xffff) {
      ++hdr.n_invalid;
      ++i;
    }
    std::memcpy(rec.data(), &hdr, sizeof(hdr));  // host-endian, as the kernel reads it
    records.push_back(std::move(rec));
  }
  return records;
}

Status RestoreHtab(kp::Vm& vm, schema::ppc::Htab::Reader htab, const Options& options) {
  const uint32_t shift = htab.getShift();
  if (shift < kp::kMinHptOrder || shift > kp::kMaxHptOrder)
    return Status::Corruption("ppc64 HTAB shift " + std::to_string(shift) + " is outside 18..46");
  const uint64_t npte = uint64_t{1} << (shift - 4);
  uint64_t prev = 0;
  bool first = true;
  for (auto e : htab.getEntries()) {
    if (e.getIndex() >= npte || (!first && e.getIndex() <= prev))
      return Status::Corruption("ppc64 HTAB entry " + std::to_string(e.getIndex()) +
                                " is out of order or beyond the table");
    if (!(e.getV() & kp::kHpteVValid))
      return Status::Corruption("ppc64 HTAB entry " + std::to_string(e.getIndex()) + " is not valid");
    prev = e.getIndex();
    first = false;
  }

  // The table must have the saved size before any index means anything.
  uint32_t order = shift;
  VMSNAP_RETURN_IF_ERROR(kp::IoctlStatus(kp::RetryEintr([&] { return vm.AllocateHtab(&order); }),
                                         "KVM_PPC_ALLOCATE_HTAB", " (order " + std::to_string(shift) + ")"));
  if (order != shift)
    return Status::Kvm("KVM_PPC_ALLOCATE_HTAB gave order " + std::to_string(order) + ", asked " +
                       std::to_string(shift));

  kp::HtabFdArgs args{};
  args.flags = kp::kHtabWrite;
  std::unique_ptr<kp::HtabFile> fd;
  VMSNAP_RETURN_IF_ERROR(kp::IoctlStatus(kp::RetryEintr([&] { return vm.GetHtabFd(args, &fd); }),
                                         "KVM_PPC_GET_HTAB_FD (write)"));

  // Batch whole records per write; the kernel consumes whole records and
  // returns how many bytes that was, so a short write resumes there.
  auto records = EncodeHtab(htab);
  std::vector<uint8_t> buf;
  size_t r = 0;
  while (r < records.size()) {
    buf.clear();
    while (r < records.size() &&
           (buf.empty() || buf.size() + records[r].size() <= options.write_buffer)) {
      buf.insert(buf.end(), records[r].begin(), records[r].end());
      ++r;
    }
    size_t off = 0;
    while (off < buf.size()) {
      ssize_t n = kp::RetryEintr([&] { return fd->Write(buf.data() + off, buf.size() - off); });
      if (n < 0) return kp::IoctlStatus(n, "write(KVM_PPC_GET_HTAB_FD fd)");
      if (n == 0) return Status::Kvm("write(KVM_PPC_GET_HTAB_FD fd): no progress at record boundary");
      off += static_cast<size_t>(n);
    }
  }
  return Status::Ok();
}

Status RestoreVcpu(kp::Vcpu& vcpu, schema::ppc::Vcpu::Reader st) {
  if (st.getSprg().size() != 8 || st.getGpr().size() != 32)
    return Status::Corruption("ppc64 vCPU needs 8 sprg and 32 gpr values");
  kp::Regs regs{};
  regs.pc = st.getPc();
  regs.cr = st.getCr();
  regs.ctr = st.getCtr();
  regs.lr = st.getLr();
  regs.xer = st.getXer();
  regs.msr = st.getMsr();
  regs.srr0 = st.getSrr0();
  regs.srr1 = st.getSrr1();
  regs.pid = st.getPid();
  uint64_t* sprg[8] = {&regs.sprg0, &regs.sprg1, &regs.sprg2, &regs.sprg3,
                       &regs.sprg4, &regs.sprg5, &regs.sprg6, &regs.sprg7};
  for (unsigned i = 0; i < 8; ++i) *sprg[i] = st.getSprg()[i];
  for (unsigned i = 0; i < 32; ++i) regs.gpr[i] = st.getGpr()[i];
  VMSNAP_RETURN_IF_ERROR(kp::IoctlStatus(kp::RetryEintr([&] { return vcpu.SetRegs(regs); }), "KVM_SET_REGS"));

  // SET_SREGS checks the PVR against the vCPU's (EINVAL when the host CPU
  // model differs) and loads the SLB.
  kp::Sregs sregs{};
  sregs.pvr = st.getPvr();
  sregs.u.s.sdr1 = st.getSdr1();
  auto slb = st.getSlb();
  if (slb.size() > kp::kSlbEntries) return Status::Corruption("ppc64 vCPU has more than 64 SLB entries");
  for (unsigned i = 0; i < slb.size(); ++i) {
    sregs.u.s.slb[i].slbe = slb[i].getEsid();
    sregs.u.s.slb[i].slbv = slb[i].getVsid();
  }
  VMSNAP_RETURN_IF_ERROR(kp::IoctlStatus(kp::RetryEintr([&] { return vcpu.SetSregs(sregs); }), "KVM_SET_SREGS"));

  // SPRs and register files, in the order captured (FPRs before VSRs).
  for (auto r : st.getOneRegs()) {
    uint8_t bytes[16] = {};
    const size_t n = kp::OneRegSize(r.getId());
    if (n == 4) {
      uint32_t v = static_cast<uint32_t>(r.getValue());
      std::memcpy(bytes, &v, 4);
    } else if (n == 8) {
      uint64_t v = r.getValue();
      std::memcpy(bytes, &v, 8);
    } else if (n == 16 && r.getWide().size() == 16) {
      std::memcpy(bytes, r.getWide().begin(), 16);
      if constexpr (std::endian::native == std::endian::big) std::reverse(bytes, bytes + 16);
    } else {
      return Status::Corruption("ppc64 ONE_REG " + std::string(r.getName().cStr()) + " has an unexpected size");
    }
    kvm_one_reg one{r.getId(), reinterpret_cast<uintptr_t>(bytes)};
    VMSNAP_RETURN_IF_ERROR(kp::IoctlStatus(kp::RetryEintr([&] { return vcpu.SetOneReg(one); }),
                                           "KVM_SET_ONE_REG " + std::string(r.getName().cStr())));
  }
  return Status::Ok();
}

Status RestoreManifest(kp::Vm& vm, std::span<kp::Vcpu* const> vcpus, schema::Manifest::Reader m,
                       const Options& options) {
  if (m.getArch() != schema::Arch::PPC64)
    return Status::WrongArch("snapshot is not for ppc64 (wrong architecture)");
  if (!m.getVm().isPpc64()) return Status::Corruption("ppc64 snapshot without ppc64 VM state");
  if (m.getVcpus().size() != vcpus.size())
    return Status::InvalidArgument("snapshot has " + std::to_string(m.getVcpus().size()) +
                                   " vCPUs, the VM has " + std::to_string(vcpus.size()));
  // The HPT first: vCPUs must not run before their translations exist.
  Status s = RestoreHtab(vm, m.getVm().getPpc64().getHtab(), options);
  if (!s.ok()) return s.Context("ppc64 restore");
  for (size_t i = 0; i < vcpus.size(); ++i) {
    auto v = m.getVcpus()[i];
    if (!v.isPpc64()) return Status::Corruption("vCPU " + std::to_string(i) + " has no ppc64 state");
    s = RestoreVcpu(*vcpus[i], v.getPpc64());
    if (!s.ok()) return s.Context("vCPU " + std::to_string(i)).Context("ppc64 restore");
  }
  return Status::Ok();
}

}  // namespace vmsnap::restore::ppc64
