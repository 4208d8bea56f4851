// SPDX-License-Identifier: MIT
// Each architecture's resume addresses from the manifest's registers, then
// one page walk per address (guest/paging.h).
#include "guest/start_pages.h"

#include <algorithm>

#include "guest/paging.h"

namespace vmsnap::guest {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kEferLma = 1ull << 10;

std::vector<uint64_t> X86Addresses(schema::x86::Vcpu::Reader v) {
  auto regs = v.getRegs();
  auto sregs = v.getSregs();
  // Outside long mode a linear address is 32 bits and wraps.
  const uint64_t mask = (sregs.getEfer() & kEferLma) ? ~uint64_t(0) : 0xffffffffull;
  return {(sregs.getCs().getBase() + regs.getRip()) & mask, (sregs.getSs().getBase() + regs.getRsp() - 8) & mask};
}

std::vector<uint64_t> Arm64Addresses(schema::aarch64::Vcpu::Reader v) {
  auto core = v.getCore();
  const uint64_t pstate = core.getPstate();
  if (pstate & (1u << 4)) return {core.getPc()};  // nRW: AArch32, whose stack is a banked register
  const uint64_t el = (pstate >> 2) & 3;
  const bool sp_elx = (pstate & 1) != 0;  // M[0]: SPSel
  if (!sp_elx) return {core.getPc(), core.getSpEl0() - 8};  // EL0t or ELxt
  if (el == 1) return {core.getPc(), core.getSpEl1() - 8};  // EL1h
  return {core.getPc()};  // EL2h (nested): its stack pointer is not among these registers
}

}  // namespace

std::vector<uint64_t> StartAddresses(schema::Manifest::Reader manifest, uint64_t vcpu) {
  auto vcpus = manifest.getVcpus();
  if (vcpu >= vcpus.size()) return {};
  auto v = vcpus[static_cast<unsigned>(vcpu)];
  if (manifest.getArch() == schema::Arch::X8664 && v.isX8664()) return X86Addresses(v.getX8664());
  if (manifest.getArch() == schema::Arch::AARCH64 && v.isAarch64()) return Arm64Addresses(v.getAarch64());
  return {};
}

std::vector<uint64_t> StartPages(schema::Manifest::Reader manifest, const PhysicalMemory& memory) {
  std::vector<uint64_t> pages;
  for (uint64_t i = 0; i < manifest.getVcpus().size(); ++i) {
    auto regs = PagingRegsOf(manifest, i);
    if (!regs.ok()) continue;
    for (uint64_t gva : StartAddresses(manifest, i)) {
      auto t = Translate(memory, *regs, gva);
      if (!t.ok() || !t->mapped) continue;
      const uint64_t page = t->gpa & ~(kPage - 1);
      if (!CheckInside(memory.regions(), page, 1).ok()) continue;  // no paging: any address translates
      if (std::find(pages.begin(), pages.end(), page) == pages.end()) pages.push_back(page);
    }
  }
  return pages;
}

}  // namespace vmsnap::guest
