// SPDX-License-Identifier: MIT
// Guest boot: see boot.h and docs/guest-abi.md.
#include "vmm/boot.h"

#include <elf.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <iterator>

namespace vmsnap::vmm {
namespace {

Status CopyIn(GuestMemory& mem, uint64_t gpa, const uint8_t* data, uint64_t len, uint64_t memsz,
              const std::string& path) {
  if (gpa < kFlatLoadAddr) {
    return Status::InvalidArgument("guest image " + path + " loads at 0x" + [&] {
      char b[32];
      std::snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(gpa));
      return std::string(b);
    }() + ", inside the VMM's boot area below 0x100000");
  }
  uint8_t* host = mem.HostPtr(gpa, memsz);
  if (!host) {
    return Status::InvalidArgument("guest image " + path + " (" + std::to_string(memsz) + " bytes at 0x" + [&] {
      char b[32];
      std::snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(gpa));
      return std::string(b);
    }() + ") does not fit in guest RAM of " + std::to_string(mem.total_size() >> 20) + " MiB");
  }
  std::memcpy(host, data, len);
  std::memset(host + len, 0, memsz - len);
  return Status::Ok();
}

}  // namespace

Result<uint64_t> LoadImage(const std::string& path, GuestMemory& mem) {
  // Opening a FIFO would wait for a writer: only regular files are images.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Status::NotFound("cannot open guest image " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument("guest image " + path + " is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("cannot open guest image " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> img((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (img.empty()) return Status::InvalidArgument("guest image " + path + " is empty");
  if (img.size() >= sizeof(Elf64_Ehdr) && std::memcmp(img.data(), ELFMAG, SELFMAG) == 0) {
    Elf64_Ehdr eh;
    std::memcpy(&eh, img.data(), sizeof eh);
    if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64) {
      return Status::InvalidArgument("guest image " + path + " is an ELF file but not ELF64 x86-64");
    }
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > img.size() ||
        static_cast<uint64_t>(eh.e_phnum) * sizeof(Elf64_Phdr) > img.size() - eh.e_phoff) {
      return Status::InvalidArgument("guest image " + path + ": program headers out of bounds");
    }
    int loaded = 0;
    for (int i = 0; i < eh.e_phnum; ++i) {
      Elf64_Phdr ph;
      std::memcpy(&ph, img.data() + eh.e_phoff + i * sizeof ph, sizeof ph);
      if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
      if (ph.p_filesz > ph.p_memsz || ph.p_offset > img.size() || ph.p_filesz > img.size() - ph.p_offset) {
        return Status::InvalidArgument("guest image " + path + ": segment " + std::to_string(i) + " out of bounds");
      }
      VMSNAP_RETURN_IF_ERROR(CopyIn(mem, ph.p_paddr, img.data() + ph.p_offset, ph.p_filesz, ph.p_memsz, path));
      ++loaded;
    }
    if (loaded == 0) return Status::InvalidArgument("guest image " + path + " has no PT_LOAD segment");
    return static_cast<uint64_t>(eh.e_entry);
  }
  VMSNAP_RETURN_IF_ERROR(CopyIn(mem, kFlatLoadAddr, img.data(), img.size(), img.size(), path));
  return kFlatLoadAddr;
}

Status WriteBootStructures(GuestMemory& mem) {
  // Flat 64-bit code (0x08) and data (0x10) descriptors.
  const uint64_t gdt[3] = {0, 0x00af9b000000ffffull, 0x00cf93000000ffffull};
  uint8_t* g = mem.HostPtr(kGdtAddr, sizeof gdt);
  if (!g) return Status::InvalidArgument("guest RAM does not cover the boot area (need at least 1 MiB)");
  std::memcpy(g, gdt, sizeof gdt);

  // Identity map with 2 MiB pages of max(4 GiB, top of RAM): the LAPIC and
  // IOAPIC pages sit just below 4 GiB.
  uint64_t top = std::max<uint64_t>(mem.top(), 4ull << 30);
  uint64_t gib = (top + (1ull << 30) - 1) >> 30;
  if (kPdAddr + gib * 4096 > kStackArea || gib > 512) {
    return Status::InvalidArgument("guest RAM too large for the boot page tables (at most 124 GiB)");
  }
  auto* pml4 = reinterpret_cast<uint64_t*>(mem.HostPtr(kPml4Addr, 4096));
  auto* pdpt = reinterpret_cast<uint64_t*>(mem.HostPtr(kPdptAddr, 4096));
  auto* pd = reinterpret_cast<uint64_t*>(mem.HostPtr(kPdAddr, gib * 4096));
  if (!pml4 || !pdpt || !pd) return Status::InvalidArgument("guest RAM does not cover the boot page tables");
  std::memset(pml4, 0, 4096);
  std::memset(pdpt, 0, 4096);
  pml4[0] = kPdptAddr | 0x3;  // present, writable
  for (uint64_t i = 0; i < gib; ++i) {
    pdpt[i] = (kPdAddr + i * 4096) | 0x3;
    for (uint64_t j = 0; j < 512; ++j) pd[i * 512 + j] = ((i * 512 + j) << 21) | 0x83;  // present, writable, 2 MiB
  }
  return Status::Ok();
}

Status SetupVcpu(kvm::x86::VcpuOps& vcpu, int count, uint64_t ram_size, uint64_t entry,
                 const std::vector<kvm_cpuid_entry2>& supported_cpuid) {
  const uint32_t id = static_cast<uint32_t>(vcpu.index());
  std::vector<kvm_cpuid_entry2> cpuid = supported_cpuid;
  for (auto& e : cpuid) {
    if (e.function == 1) {
      e.ebx = (e.ebx & 0x0000ffffu) | (static_cast<uint32_t>(count) << 16) | (id << 24);  // APIC ID, count
      e.ecx |= 1u << 31;  // running under a hypervisor
    }
    if (e.function == 0xb || e.function == 0x1f) e.edx = id;  // x2APIC ID
  }
  VMSNAP_RETURN_IF_ERROR(vcpu.SetCpuid(cpuid));

  // KVM starts application processors waiting for INIT/SIPI; every vCPU
  // enters the guest at once, so all are made runnable.
  kvm_mp_state mp{};
  mp.mp_state = KVM_MP_STATE_RUNNABLE;
  VMSNAP_RETURN_IF_ERROR(vcpu.SetMpState(mp));

  VMSNAP_ASSIGN_OR_RETURN(kvm_sregs s, vcpu.GetSregs());
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = 0x08;
  code.type = 0xb;  // execute/read, accessed
  code.present = 1;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = 0x10;
  data.type = 0x3;  // read/write, accessed
  data.l = 0;
  data.db = 1;
  s.cs = code;
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.gdt.base = kGdtAddr;
  s.gdt.limit = 3 * 8 - 1;
  s.idt.base = 0;
  s.idt.limit = 0;
  s.cr3 = kPml4Addr;
  s.cr4 = 1u << 5;                                        // PAE
  s.cr0 = 0x80000000u | 0x10000u | 0x20u | 0x10u | 0x1u;  // PG WP NE ET PE
  s.efer = 0x500;                                         // LME | LMA
  VMSNAP_RETURN_IF_ERROR(vcpu.SetSregs(s));

  kvm_regs r{};
  r.rip = entry;
  r.rflags = 0x2;
  r.rdi = id;
  r.rsi = static_cast<uint64_t>(count);
  r.rdx = ram_size;
  r.rsp = kFlatLoadAddr - static_cast<uint64_t>(id) * kStackSize;
  VMSNAP_RETURN_IF_ERROR(vcpu.SetRegs(r));

  // LINT0 as ExtINT (the PIC's output reaches the CPU through it) and LINT1
  // as NMI, as a PC BIOS leaves them.
  VMSNAP_ASSIGN_OR_RETURN(kvm_lapic_state lapic, vcpu.GetLapic());
  auto set = [&lapic](size_t off, uint32_t v) { std::memcpy(lapic.regs + off, &v, 4); };
  set(0x350, 0x700);
  set(0x360, 0x400);
  VMSNAP_RETURN_IF_ERROR(vcpu.SetLapic(lapic));
  return Status::Ok();
}

}  // namespace vmsnap::vmm
