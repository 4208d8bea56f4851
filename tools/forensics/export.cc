// SPDX-License-Identifier: MIT
// ELF core, LiME and raw export. The ELF core follows what QEMU's
// dump-guest-memory writes: one PT_NOTE (per x86 vCPU NT_PRSTATUS, then the
// FPU and XSAVE notes the kernel's own cores carry, then QEMU's "QEMU" CPU
// state notes, then the guest's VMCOREINFO when it gave one), then one PT_LOAD
// per memory region with p_vaddr = p_paddr = guest-physical address.
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
  Streamer(const guest::PhysicalMemory& mem, OutputFile& out, const ExportOptions& opt, uint64_t total,
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
      // Zero runs are found in pages of the output file, not of guest
      // memory: a file can only have holes in whole blocks, and in a LiME
      // image (32-byte headers before each range) the two are not aligned.
      uint64_t i = 0;
      while (i < n) {
        const uint64_t step = std::min(kPage - (offset + i) % kPage, n - i);
        if (AllZero(buf_.get() + i, step)) {
          i += step;
          continue;
        }
        uint64_t j = i + step;
        while (j < n) {
          const uint64_t s2 = std::min(kPage - (offset + j) % kPage, n - j);
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
  const guest::PhysicalMemory& mem_;
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
constexpr uint32_t kNtPrfpreg = 2;
constexpr uint32_t kNtX86Xstate = 0x202;
constexpr size_t kFxsaveSize = 512;
// Where the kernel's XSAVE note keeps XCR0 (in the FXSAVE area's bytes the
// hardware leaves to software); gdb reads the enabled features from there.
constexpr size_t kXstateXcr0Offset = 464;
constexpr uint32_t kMsrKernelGsBase = 0xc0000102;

void AppendNote(Bytes& notes, std::string_view name, uint32_t type, const std::vector<uint8_t>& desc) {
  notes.U32(name.size() + 1);
  notes.U32(desc.size());
  notes.U32(type);
  notes.Raw(name.data(), name.size());
  notes.U8(0);
  notes.PadTo(4);
  notes.Raw(desc.data(), desc.size());
  notes.PadTo(4);
}

uint64_t XcrValue(schema::x86::Vcpu::Reader v, uint32_t index, uint64_t fallback) {
  for (auto x : v.getXcrs()) {
    if (x.getXcr() == index) return x.getValue();
  }
  return fallback;
}

// The guest's VMCOREINFO note, when the snapshot came from a QEMU that had a
// vmcoreinfo device the guest filled in: its migration section (kept as a
// device record by the import) holds where the note is in guest memory, and
// the note is copied from there as QEMU's own dump does. Absent or unusable
// information gives no note rather than an error: the dump is still useful.
std::vector<uint8_t> GuestVmcoreinfo(const guest::PhysicalMemory& mem, schema::Manifest::Reader manifest) {
  for (auto d : manifest.getDevices()) {
    if (d.getName() != "qemu:vmcoreinfo:0") continue;
    auto b = d.getData();
    // bool has_vmcoreinfo, be16 host_format, be16 guest_format, be32 size, be64 paddr.
    if (b.size() < 17 || b[0] == 0) return {};
    auto be = [&](size_t at, unsigned n) {
      uint64_t v = 0;
      for (unsigned i = 0; i < n; ++i) v = v << 8 | b[at + i];
      return v;
    };
    const uint64_t guest_format = be(3, 2), size = be(5, 4), paddr = be(9, 8);
    constexpr uint64_t kFormatElf = 1;
    if (guest_format != kFormatElf || size < 12 || size > (1u << 20)) return {};
    std::vector<uint8_t> note(size);
    if (!mem.Read(paddr, size, note.data()).ok()) return {};
    // The kernel writes a whole ELF note: check that it is one before copying.
    auto le32 = [&](size_t at) {
      return uint32_t(note[at]) | uint32_t(note[at + 1]) << 8 | uint32_t(note[at + 2]) << 16 |
             uint32_t(note[at + 3]) << 24;
    };
    const uint64_t namesz = le32(0), descsz = le32(4);
    if (namesz != 11 || std::memcmp(note.data() + 12, "VMCOREINFO", 11) != 0 ||
        12 + AlignUp(namesz, 4) + descsz > size) {
      return {};
    }
    note.resize(12 + AlignUp(namesz, 4) + AlignUp(descsz, 4));
    return note;
  }
  return {};
}
constexpr size_t kEhdrSize = 64;
constexpr size_t kPhdrSize = 56;
constexpr size_t kPrstatusSize = 336;

Status ExportElf(const guest::PhysicalMemory& mem, schema::Manifest::Reader manifest, OutputFile& out,
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
  // gdb gives the FPU and XSAVE notes to the thread of the NT_PRSTATUS before
  // them, so each vCPU's notes stay together.
  Bytes notes(big);
  if (arch == schema::Arch::X8664 || arch == schema::Arch::AARCH64) {
    uint32_t index = 0;
    for (auto v : manifest.getVcpus()) {
      if (arch == schema::Arch::X8664) {
        if (!v.isX8664()) return Status::Corruption("vCPU " + std::to_string(index) + " holds no x86_64 state");
        auto x = v.getX8664();
        AppendNote(notes, "CORE", kNtPrstatus, X86Prstatus(x, index));
        auto area = x.getXsave();
        if (area.size() >= kFxsaveSize) {
          AppendNote(notes, "CORE", kNtPrfpreg, std::vector<uint8_t>(area.begin(), area.begin() + kFxsaveSize));
          AppendNote(notes, "LINUX", kNtX86Xstate, X86Xstate(x));
        }
      } else {
        if (!v.isAarch64()) return Status::Corruption("vCPU " + std::to_string(index) + " holds no aarch64 state");
        AppendNote(notes, "CORE", kNtPrstatus, Arm64Prstatus(v.getAarch64(), index));
      }
      ++index;
    }
  }
  if (arch == schema::Arch::X8664) {
    // QEMU writes its CPU state notes after all the NT_PRSTATUS ones; crash
    // finds CR3 and the IDT there, and from them the kernel's KASLR offset.
    for (auto v : manifest.getVcpus()) AppendNote(notes, "QEMU", 0, X86QemuCpuState(v.getX8664()));
    std::vector<uint8_t> vmcoreinfo = GuestVmcoreinfo(mem, manifest);
    notes.Raw(vmcoreinfo.data(), vmcoreinfo.size());
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
  for (const guest::Region& r : regions) {
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
  for (const guest::Region& r : regions) total += r.size;
  Streamer s(mem, out, opt, total, stats);
  for (size_t i = 0; i < regions.size(); ++i) {
    VMSNAP_RETURN_IF_ERROR(s.Copy(regions[i].gpa, regions[i].size, offsets[i]));
  }
  stats.memory_bytes = total;
  stats.file_size = regions.empty() ? h.size() : offsets.back() + regions.back().size;
  return Status::Ok();
}

Status ExportLime(const guest::PhysicalMemory& mem, OutputFile& out, const ExportOptions& opt,
                  ExportStats& stats) {
  const auto& regions = mem.regions();
  uint64_t total = 0;
  for (const guest::Region& r : regions) total += r.size;
  Streamer s(mem, out, opt, total, stats);
  uint64_t off = 0;
  for (const guest::Region& r : regions) {
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

Status ExportRaw(const guest::PhysicalMemory& mem, OutputFile& out, const ExportOptions& opt,
                 ExportStats& stats) {
  const auto& regions = mem.regions();
  uint64_t total = 0;
  for (const guest::Region& r : regions) total += r.size;
  Streamer s(mem, out, opt, total, stats);
  for (const guest::Region& r : regions) VMSNAP_RETURN_IF_ERROR(s.Copy(r.gpa, r.size, r.gpa));
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
  b.U32(vcpu.getXsave().size() >= 512 ? 1 : 0);  // pr_fpvalid: an NT_PRFPREG note follows
  b.PadTo(8);
  return std::move(b.bytes());
}

std::vector<uint8_t> X86Xstate(schema::x86::Vcpu::Reader vcpu) {
  auto area = vcpu.getXsave();
  std::vector<uint8_t> out(area.begin(), area.end());
  if (out.size() < kXstateXcr0Offset + 8) return out;
  // XCR0 says which components of the area are in use; without XSAVE in the
  // guest only x87 and SSE are.
  const uint64_t xcr0 = XcrValue(vcpu, 0, 3);
  for (unsigned i = 0; i < 8; ++i) out[kXstateXcr0Offset + i] = static_cast<uint8_t>(xcr0 >> (8 * i));
  return out;
}

namespace {

// QEMU's segment "flags": the descriptor's attribute bits where the
// descriptor's high word has them (type 8-11, S 12, DPL 13-14, P 15, AVL 20,
// L 21, D/B 22, G 23), as QEMU computes them from KVM's segments.
uint32_t QemuSegmentFlags(schema::x86::Segment::Reader s) {
  return uint32_t(s.getType()) << 8 | uint32_t(s.getS() != 0) << 12 | uint32_t(s.getDpl() & 3) << 13 |
         uint32_t(s.getPresent() != 0 && s.getUnusable() == 0) << 15 | uint32_t(s.getAvl() != 0) << 20 |
         uint32_t(s.getL() != 0) << 21 | uint32_t(s.getDb() != 0) << 22 | uint32_t(s.getG() != 0) << 23;
}

void QemuSegment(Bytes& b, uint32_t selector, uint32_t limit, uint32_t flags, uint64_t base) {
  b.U32(selector);
  b.U32(limit);
  b.U32(flags);
  b.U32(0);  // pad
  b.U64(base);
}

}  // namespace

std::vector<uint8_t> X86QemuCpuState(schema::x86::Vcpu::Reader vcpu) {
  auto r = vcpu.getRegs();
  auto s = vcpu.getSregs();
  Bytes b(false);
  b.U32(1);    // version
  b.U32(440);  // size: the version-1 layout with kernel_gs_base at its end
  for (uint64_t v : {r.getRax(), r.getRbx(), r.getRcx(), r.getRdx(), r.getRsi(), r.getRdi(), r.getRsp(),
                     r.getRbp(), r.getR8(), r.getR9(), r.getR10(), r.getR11(), r.getR12(), r.getR13(),
                     r.getR14(), r.getR15(), r.getRip(), r.getRflags()}) {
    b.U64(v);
  }
  for (auto seg : {s.getCs(), s.getDs(), s.getEs(), s.getFs(), s.getGs(), s.getSs(), s.getLdt(), s.getTr()}) {
    QemuSegment(b, seg.getSelector(), seg.getLimit(), QemuSegmentFlags(seg), seg.getBase());
  }
  QemuSegment(b, 0, s.getGdt().getLimit(), 0, s.getGdt().getBase());
  QemuSegment(b, 0, s.getIdt().getLimit(), 0, s.getIdt().getBase());
  b.U64(s.getCr0());
  b.U64(0);  // cr1
  b.U64(s.getCr2());
  b.U64(s.getCr3());
  b.U64(s.getCr4());
  uint64_t kernel_gs_base = 0;
  for (auto m : vcpu.getMsrs()) {
    if (m.getIndex() == kMsrKernelGsBase) kernel_gs_base = m.getValue();
  }
  b.U64(kernel_gs_base);
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

Result<ExportStats> Export(const guest::PhysicalMemory& memory, schema::Manifest::Reader manifest,
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
