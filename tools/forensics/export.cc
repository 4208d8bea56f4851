// SPDX-License-Identifier: MIT
// ELF core, LiME and raw export. The ELF core follows what QEMU's
// dump-guest-memory writes: one PT_NOTE with an NT_PRSTATUS per vCPU, then one
// PT_LOAD per memory region with p_vaddr = p_paddr = guest-physical address.
#include "tools/forensics/export.h"

#include "format/output.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

namespace vmsnap::forensics {
namespace {

// Appends integers in an explicit byte order, so the output is the same on
// little- and big-endian hosts.
class Bytes {
 public:
  explicit Bytes(bool big_endian = false) : big_(big_endian) {}
  void U8(uint8_t v) { b_.push_back(v); }
  void U16(uint64_t v) { Put(v, 2); }
  void U32(uint64_t v) { Put(v, 4); }
  void U64(uint64_t v) { Put(v, 8); }
  void Raw(const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    b_.insert(b_.end(), c, c + n);
  }
  void PadTo(size_t align) {
    while (b_.size() % align) b_.push_back(0);
  }
  size_t size() const { return b_.size(); }
  std::vector<uint8_t>& bytes() { return b_; }

 private:
  void Put(uint64_t v, unsigned n) {
    for (unsigned i = 0; i < n; ++i) {
      const unsigned shift = big_ ? 8 * (n - 1 - i) : 8 * i;
      b_.push_back(static_cast<uint8_t>(v >> shift));
    }
  }
  bool big_;
  std::vector<uint8_t> b_;
};

constexpr uint64_t kPage = 4096;

bool AllZero(const uint8_t* p, size_t n) {
  // Word compares: this runs over every byte of guest memory.
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w) return false;
  }
  for (; i < n; ++i) {
    if (p[i]) return false;
  }
  return true;
}

// Copies guest memory [gpa, gpa+len) to the file at `offset`, a piece at a
// time, leaving runs of zero pages unwritten (the file is sparse there).
class Streamer {
 public:
  Streamer(const PhysicalMemory& mem, OutputFile& out, const ExportOptions& opt, uint64_t total,
           ExportStats& stats)
      : mem_(mem), out_(out), opt_(opt), total_(total), stats_(stats),
        piece_(std::max<uint64_t>(kPage, opt.piece_bytes / kPage * kPage)),
        buf_(new uint8_t[piece_]) {}

  Status Copy(uint64_t gpa, uint64_t len, uint64_t offset) {
    while (len > 0) {
      // Pieces end on piece-size boundaries of the address, so they line up
      // with the snapshot's chunks and no chunk is decompressed twice.
      const uint64_t n = std::min(len, piece_ - gpa % piece_);
      VMSNAP_RETURN_IF_ERROR(mem_.Read(gpa, n, buf_.get()));
      uint64_t i = 0;
      while (i < n) {
        const uint64_t step = std::min(kPage - (gpa + i) % kPage, n - i);
        if (AllZero(buf_.get() + i, step)) {
          i += step;
          continue;
        }
        uint64_t j = i + step;
        while (j < n) {
          const uint64_t s2 = std::min(kPage, n - j);
          if (AllZero(buf_.get() + j, s2)) break;
          j += s2;
        }
        VMSNAP_RETURN_IF_ERROR(out_.SkipTo(offset + i));
        VMSNAP_RETURN_IF_ERROR(out_.Append(buf_.get() + i, j - i));
        stats_.data_written += j - i;
        i = j;
      }
      gpa += n;
      offset += n;
      len -= n;
      done_ += n;
      if (opt_.progress) opt_.progress(done_, total_);
    }
    return Status::Ok();
  }

 private:
  const PhysicalMemory& mem_;
  OutputFile& out_;
  const ExportOptions& opt_;
  uint64_t total_;
  ExportStats& stats_;
  uint64_t piece_;
  std::unique_ptr<uint8_t[]> buf_;
  uint64_t done_ = 0;
};

uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

constexpr uint16_t kEtCore = 4;
constexpr uint16_t kEmX8664 = 62;
constexpr uint16_t kEmS390 = 22;
constexpr uint16_t kEmPpc64 = 21;
constexpr uint16_t kEmAarch64 = 183;
constexpr uint32_t kPtLoad = 1;
constexpr uint32_t kPtNote = 4;
constexpr uint32_t kNtPrstatus = 1;
constexpr size_t kEhdrSize = 64;
constexpr size_t kPhdrSize = 56;
constexpr size_t kPrstatusSize = 336;

Status ExportElf(const PhysicalMemory& mem, schema::Manifest::Reader manifest, OutputFile& out,
                 const ExportOptions& opt, ExportStats& stats) {
  const auto& regions = mem.regions();
  const auto arch = manifest.getArch();
  // s390x cores are big-endian, as the kernel writes them there.
  const bool big = arch == schema::Arch::S390X;
  const uint16_t machine = arch == schema::Arch::X8664     ? kEmX8664
                           : arch == schema::Arch::S390X   ? kEmS390
                           : arch == schema::Arch::AARCH64 ? kEmAarch64
                                                           : kEmPpc64;

  // Notes: one NT_PRSTATUS per vCPU. The x86-64 and arm64 layouts are
  // written; other architectures get their memory without register notes.
  Bytes notes(big);
  if (arch == schema::Arch::X8664 || arch == schema::Arch::AARCH64) {
    uint32_t index = 0;
    for (auto v : manifest.getVcpus()) {
      std::vector<uint8_t> desc;
      if (arch == schema::Arch::X8664) {
        if (!v.isX8664()) return Status::Corruption("vCPU " + std::to_string(index) + " holds no x86_64 state");
        desc = X86Prstatus(v.getX8664(), index);
      } else {
        if (!v.isAarch64()) return Status::Corruption("vCPU " + std::to_string(index) + " holds no aarch64 state");
        desc = Arm64Prstatus(v.getAarch64(), index);
      }
      notes.U32(5);  // "CORE\0"
      notes.U32(desc.size());
      notes.U32(kNtPrstatus);
      notes.Raw("CORE\0\0\0", 8);  // name padded to 4 bytes
      notes.Raw(desc.data(), desc.size());
      notes.PadTo(4);
      ++index;
    }
  }
  const bool have_notes = notes.size() > 0;
  const uint64_t phnum = regions.size() + (have_notes ? 1 : 0);
  if (phnum >= 0xffff) return Status::Unsupported("too many memory regions for an ELF core");

  const uint64_t notes_off = kEhdrSize + kPhdrSize * phnum;
  // Memory starts page-aligned so its zero pages can be holes in the file.
  uint64_t data_off = AlignUp(notes_off + notes.size(), kPage);

  Bytes h(big);
  h.Raw("\x7f" "ELF", 4);
  h.U8(2);              // ELFCLASS64
  h.U8(big ? 2 : 1);    // ELFDATA2MSB / ELFDATA2LSB
  h.U8(1);              // EV_CURRENT
  h.U8(0);              // ELFOSABI_NONE
  h.PadTo(16);
  h.U16(kEtCore);
  h.U16(machine);
  h.U32(1);             // e_version
  h.U64(0);             // e_entry
  h.U64(kEhdrSize);     // e_phoff
  h.U64(0);             // e_shoff
  h.U32(0);             // e_flags
  h.U16(kEhdrSize);
  h.U16(kPhdrSize);
  h.U16(phnum);
  h.U16(0);             // e_shentsize
  h.U16(0);             // e_shnum
  h.U16(0);             // e_shstrndx
  if (have_notes) {
    h.U32(kPtNote);
    h.U32(0);           // p_flags
    h.U64(notes_off);
    h.U64(0);           // p_vaddr
    h.U64(0);           // p_paddr
    h.U64(notes.size());
    h.U64(0);           // p_memsz: notes occupy no memory
    h.U64(4);           // p_align
  }
  std::vector<uint64_t> offsets;
  uint64_t off = data_off;
  for (const Region& r : regions) {
    offsets.push_back(off);
    h.U32(kPtLoad);
    h.U32(7);           // PF_R | PF_W | PF_X
    h.U64(off);
    h.U64(r.gpa);       // p_vaddr: gdb resolves addresses through it
    h.U64(r.gpa);       // p_paddr
    h.U64(r.size);      // p_filesz
    h.U64(r.size);      // p_memsz
    h.U64(0);           // p_align
    off = AlignUp(off + r.size, kPage);
  }
  h.Raw(notes.bytes().data(), notes.size());
  VMSNAP_RETURN_IF_ERROR(out.Append(h.bytes().data(), h.size()));

  uint64_t total = 0;
  for (const Region& r : regions) total += r.size;
  Streamer s(mem, out, opt, total, stats);
  for (size_t i = 0; i < regions.size(); ++i) {
    VMSNAP_RETURN_IF_ERROR(s.Copy(regions[i].gpa, regions[i].size, offsets[i]));
  }
  stats.memory_bytes = total;
  stats.file_size = regions.empty() ? h.size() : offsets.back() + regions.back().size;
  return Status::Ok();
}

Status ExportLime(const PhysicalMemory& mem, OutputFile& out, const ExportOptions& opt,
                  ExportStats& stats) {
  const auto& regions = mem.regions();
  uint64_t total = 0;
  for (const Region& r : regions) total += r.size;
  Streamer s(mem, out, opt, total, stats);
  uint64_t off = 0;
  for (const Region& r : regions) {
    std::vector<uint8_t> hdr = LimeHeader(r.gpa, r.end() - 1);
    VMSNAP_RETURN_IF_ERROR(out.SkipTo(off));
    VMSNAP_RETURN_IF_ERROR(out.Append(hdr.data(), hdr.size()));
    off += hdr.size();
    VMSNAP_RETURN_IF_ERROR(s.Copy(r.gpa, r.size, off));
    off += r.size;
  }
  stats.memory_bytes = total;
  stats.file_size = off;
  return Status::Ok();
}

Status ExportRaw(const PhysicalMemory& mem, OutputFile& out, const ExportOptions& opt,
                 ExportStats& stats) {
  const auto& regions = mem.regions();
  uint64_t total = 0;
  for (const Region& r : regions) total += r.size;
  Streamer s(mem, out, opt, total, stats);
  for (const Region& r : regions) VMSNAP_RETURN_IF_ERROR(s.Copy(r.gpa, r.size, r.gpa));
  stats.memory_bytes = total;
  stats.file_size = regions.empty() ? 0 : regions.back().end();
  return Status::Ok();
}

}  // namespace

Result<ExportFormat> ParseExportFormat(std::string_view name) {
  if (name == "elf") return ExportFormat::kElf;
  if (name == "lime") return ExportFormat::kLime;
  if (name == "raw") return ExportFormat::kRaw;
  return Status::InvalidArgument("unknown export format '" + std::string(name) +
                                 "' (expected elf, lime, raw or qemu)");
}

std::vector<uint8_t> X86Prstatus(schema::x86::Vcpu::Reader vcpu, uint32_t index) {
  auto r = vcpu.getRegs();
  auto s = vcpu.getSregs();
  Bytes b(false);
  b.U32(0);  // pr_info.si_signo
  b.U32(0);  // pr_info.si_code
  b.U32(0);  // pr_info.si_errno
  b.U16(0);  // pr_cursig
  b.PadTo(8);
  b.U64(0);  // pr_sigpend
  b.U64(0);  // pr_sighold
  b.U32(index + 1);  // pr_pid: gdb names threads by it, and 0 reads as "no thread"
  b.U32(0);  // pr_ppid
  b.U32(0);  // pr_pgrp
  b.U32(0);  // pr_sid
  for (int i = 0; i < 8; ++i) b.U64(0);  // pr_utime, pr_stime, pr_cutime, pr_cstime
  // pr_reg: struct user_regs_struct, in its order.
  b.U64(r.getR15());
  b.U64(r.getR14());
  b.U64(r.getR13());
  b.U64(r.getR12());
  b.U64(r.getRbp());
  b.U64(r.getRbx());
  b.U64(r.getR11());
  b.U64(r.getR10());
  b.U64(r.getR9());
  b.U64(r.getR8());
  b.U64(r.getRax());
  b.U64(r.getRcx());
  b.U64(r.getRdx());
  b.U64(r.getRsi());
  b.U64(r.getRdi());
  b.U64(~0ull);  // orig_rax: -1, "not in a system call", so gdb never restarts one
  b.U64(r.getRip());
  b.U64(s.getCs().getSelector());
  b.U64(r.getRflags());
  b.U64(r.getRsp());
  b.U64(s.getSs().getSelector());
  b.U64(s.getFs().getBase());  // fs_base: KVM's sregs hold MSR_FS_BASE here
  b.U64(s.getGs().getBase());
  b.U64(s.getDs().getSelector());
  b.U64(s.getEs().getSelector());
  b.U64(s.getFs().getSelector());
  b.U64(s.getGs().getSelector());
  b.U32(0);  // pr_fpvalid
  b.PadTo(8);
  return std::move(b.bytes());
}

std::vector<uint8_t> Arm64Prstatus(schema::aarch64::Vcpu::Reader vcpu, uint32_t index) {
  auto c = vcpu.getCore();
  Bytes b(false);
  b.U32(0);  // pr_info.si_signo
  b.U32(0);  // pr_info.si_code
  b.U32(0);  // pr_info.si_errno
  b.U16(0);  // pr_cursig
  b.PadTo(8);
  b.U64(0);  // pr_sigpend
  b.U64(0);  // pr_sighold
  b.U32(index + 1);  // pr_pid: gdb names threads by it
  b.U32(0);  // pr_ppid
  b.U32(0);  // pr_pgrp
  b.U32(0);  // pr_sid
  for (int i = 0; i < 8; ++i) b.U64(0);  // pr_utime, pr_stime, pr_cutime, pr_cstime
  // pr_reg: struct user_pt_regs {regs[31], sp, pc, pstate}. The kernel's own
  // cores use the stack pointer of the exception level the vCPU was in.
  auto x = c.getX();
  for (unsigned i = 0; i < 31; ++i) b.U64(i < x.size() ? x[i] : 0);
  const bool el1 = ((c.getPstate() >> 2) & 3) != 0 && (c.getPstate() & 1);  // EL1h/EL2h: SP_ELx
  b.U64(el1 ? c.getSpEl1() : c.getSpEl0());
  b.U64(c.getPc());
  b.U64(c.getPstate());
  b.U32(0);  // pr_fpvalid
  b.PadTo(8);
  return std::move(b.bytes());
}

std::vector<uint8_t> LimeHeader(uint64_t start, uint64_t end_inclusive) {
  Bytes b(false);
  b.U32(0x4C694D45);  // "EMiL" on disk
  b.U32(1);
  b.U64(start);
  b.U64(end_inclusive);
  b.U64(0);           // reserved
  return std::move(b.bytes());
}

Result<ExportStats> Export(const PhysicalMemory& memory, schema::Manifest::Reader manifest,
                           ExportFormat format, const std::string& out_path,
                           const ExportOptions& options) {
  OutputOptions oo;
  oo.env = options.env;
  oo.inputs = options.inputs;
  // Every format is written in order, but only the raw and LiME images are
  // streams a reader can take in order: an ELF core is read by seeking.
  oo.stream_ok = format != ExportFormat::kElf;
  oo.what = format == ExportFormat::kElf ? "ELF core" : "export";
  VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<OutputFile> out, OutputFile::Create(out_path, oo));
  ExportStats stats;
  switch (format) {
    case ExportFormat::kElf:
      VMSNAP_RETURN_IF_ERROR(ExportElf(memory, manifest, *out, options, stats));
      break;
    case ExportFormat::kLime:
      VMSNAP_RETURN_IF_ERROR(ExportLime(memory, *out, options, stats));
      break;
    case ExportFormat::kRaw:
      VMSNAP_RETURN_IF_ERROR(ExportRaw(memory, *out, options, stats));
      break;
  }
  VMSNAP_RETURN_IF_ERROR(out->SkipTo(stats.file_size));  // trailing zero pages
  VMSNAP_RETURN_IF_ERROR(out->Commit());
  return stats;
}

}  // namespace vmsnap::forensics
