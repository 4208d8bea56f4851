// SPDX-License-Identifier: MIT
// ppc64 vCPU and VM state held in memory behind kvm::ppc::Vcpu/Vm: written
// through capture/ppc64, read through restore/ppc64 (see arch_state.h).
#include <algorithm>
#include <optional>

#include "capture/ppc64/ppc64_capture.h"
#include "lib/arch_state.h"
#include "lib/internal.h"
#include "restore/ppc64/ppc64_restore.h"

namespace vmsnap::capi {
namespace {
namespace kp = kvm::ppc;

class MemVcpu final : public kp::Vcpu, public MemVcpuState {
 public:
  explicit MemVcpu(uint32_t index) : MemVcpuState(index) {}
  std::optional<kp::Regs> regs;
  std::optional<kp::Sregs> sregs;

  int GetRegs(kp::Regs* r) override { return Get(regs, r, "VMSNAP_PPC64_REGS"); }
  int SetRegs(const kp::Regs& r) override { regs = r; return 0; }
  int GetSregs(kp::Sregs* r) override { return Get(sregs, r, "VMSNAP_PPC64_SREGS"); }
  int SetSregs(const kp::Sregs& r) override { sregs = r; return 0; }
  // Registers the caller did not give are absent, as on a CPU without them
  // (the capture leaves those out).
  int GetOneReg(const kvm_one_reg& r) override { return ReadOneReg(r, /*absent_is_normal=*/true); }
  int SetOneReg(const kvm_one_reg& r) override { return WriteOneReg(r); }
  int GetMpState(kvm_mp_state*) override { return -EINVAL; }
  int SetMpState(const kvm_mp_state&) override { return -EINVAL; }
};

// struct kvm_get_htab_header and the HPTEs that follow it.
struct Record {
  uint32_t index;
  uint16_t n_invalid;
  std::vector<uint8_t> hptes;  // n_valid * 16 bytes
};

Result<std::vector<Record>> ParseHtab(const uint8_t* p, size_t size) {
  std::vector<Record> out;
  size_t off = 0;
  while (off < size) {
    kp::HtabHeader h;
    if (size - off < sizeof h) {
      return Status::InvalidArgument("VMSNAP_PPC64_HTAB: record header at byte " + std::to_string(off) +
                                     " is cut short");
    }
    std::memcpy(&h, p + off, sizeof h);
    off += sizeof h;
    const size_t n = size_t{h.n_valid} * kp::kHpteSize;
    if (size - off < n) {
      return Status::InvalidArgument("VMSNAP_PPC64_HTAB: record at byte " + std::to_string(off - sizeof h) +
                                     " (index " + std::to_string(h.index) + ") claims " +
                                     std::to_string(h.n_valid) + " HPTEs past the end of the data");
    }
    out.push_back({h.index, h.n_invalid, std::vector<uint8_t>(p + off, p + off + n)});
    off += n;
  }
  return out;
}

// A read fd's answers: whole records per read, a record split where the
// buffer is full (as the kernel does), then 0 once the table was read.
class ReadFd final : public kp::HtabFile {
 public:
  explicit ReadFd(std::vector<Record> records) : records_(std::move(records)) {}
  ssize_t Read(void* buf, size_t len) override {
    auto* out = static_cast<uint8_t*>(buf);
    size_t used = 0;
    while (next_ < records_.size()) {
      Record& r = records_[next_];
      const size_t room = len - used;
      if (room < sizeof(kp::HtabHeader) + (r.hptes.empty() ? 0 : kp::kHpteSize)) break;
      const size_t fit = std::min(r.hptes.size() / kp::kHpteSize, (room - sizeof(kp::HtabHeader)) / kp::kHpteSize);
      const bool whole = fit == r.hptes.size() / kp::kHpteSize;
      kp::HtabHeader h{r.index, static_cast<uint16_t>(fit), whole ? r.n_invalid : uint16_t{0}};
      std::memcpy(out + used, &h, sizeof h);
      std::memcpy(out + used + sizeof h, r.hptes.data(), fit * kp::kHpteSize);
      used += sizeof h + fit * kp::kHpteSize;
      if (whole) {
        ++next_;
      } else {
        r.hptes.erase(r.hptes.begin(), r.hptes.begin() + static_cast<long>(fit * kp::kHpteSize));
        r.index += static_cast<uint32_t>(fit);
      }
    }
    return static_cast<ssize_t>(used);
  }
  ssize_t Write(const void*, size_t) override { return -EBADF; }

 private:
  std::vector<Record> records_;
  size_t next_ = 0;
};

class WriteFd final : public kp::HtabFile {
 public:
  explicit WriteFd(std::vector<uint8_t>* out) : out_(out) {}
  ssize_t Read(void*, size_t) override { return -EBADF; }
  ssize_t Write(const void* buf, size_t len) override {
    const auto* p = static_cast<const uint8_t*>(buf);
    out_->insert(out_->end(), p, p + len);
    return static_cast<ssize_t>(len);
  }

 private:
  std::vector<uint8_t>* out_;
};

class MemVm final : public kp::Vm {
 public:
  std::optional<std::vector<uint8_t>> htab;  // the stream as given (write) or written (read)
  std::string missing;

  int GetHtabFd(const kp::HtabFdArgs& args, std::unique_ptr<kp::HtabFile>* out) override {
    if (args.flags & kp::kHtabWrite) {
      htab = std::vector<uint8_t>();
      *out = std::make_unique<WriteFd>(&*htab);
      return 0;
    }
    if (!htab) {
      missing = "the VM has no VMSNAP_PPC64_HTAB state (vmsnap_writer_set_vm_state)";
      return -ENOENT;
    }
    auto records = ParseHtab(htab->data(), htab->size());
    if (!records.ok()) return -EINVAL;
    *out = std::make_unique<ReadFd>(std::move(records).value());
    return 0;
  }
  int AllocateHtab(uint32_t*) override { return 0; }
};

class PpcWriter final : public ArchWriter {
 public:
  // 64 KiB pages, as a book3s HV guest's memory is usually backed.
  uint32_t page_size() const override { return 65536; }
  size_t vcpu_count() const override { return vcpus_.size(); }

  int SetVcpu(uint32_t vcpu, vmsnap_state what, const void* buf, size_t size) override {
    MemVcpu& v = VcpuAt(vcpus_, vcpu);
    switch (what) {
      case VMSNAP_PPC64_REGS: return StoreExact(v.regs, buf, size, "VMSNAP_PPC64_REGS");
      case VMSNAP_PPC64_SREGS: return StoreExact(v.sregs, buf, size, "VMSNAP_PPC64_SREGS");
      case VMSNAP_ONE_REGS: return StoreOneRegs(v.one, buf, size);
      default: return NotStateOf(what, "ppc64 per-vCPU");
    }
  }

  int SetVm(vmsnap_state what, const void* buf, size_t size) override {
    if (what != VMSNAP_PPC64_HTAB) return NotStateOf(what, "ppc64 VM");
    const auto* p = static_cast<const uint8_t*>(buf);
    auto parsed = ParseHtab(p, size);
    if (!parsed.ok()) return Fail(parsed.status());
    htab_ = std::vector<uint8_t>(p, p + size);
    return Ok();
  }

  Status Capture(const std::vector<MemRange>&, schema::Manifest::Builder m) override {
    MemVm vm;
    vm.htab = htab_;
    std::vector<kp::Vcpu*> ops;
    for (auto& v : vcpus_) ops.push_back(v.get());
    Status st = capture::ppc64::CaptureManifest(vm, ops, capture::ppc64::Options{}, m);
    if (!st.ok()) {
      for (auto& v : vcpus_) {
        if (!v->missing.empty()) return Status::InvalidArgument(v->missing);
      }
      if (!vm.missing.empty()) return Status::InvalidArgument(vm.missing);
      return st.Context("VMSNAP_PPC64_HTAB");
    }
    for (size_t i = 0; i < vcpus_.size(); ++i) {
      VMSNAP_RETURN_IF_ERROR(CheckOneRegsStored(vcpus_[i]->one, vcpus_[i]->asked, i, "a ppc64"));
    }
    return Status::Ok();
  }

 private:
  std::vector<std::unique_ptr<MemVcpu>> vcpus_;
  std::optional<std::vector<uint8_t>> htab_;
};

}  // namespace

std::unique_ptr<ArchWriter> NewPpc64Writer() { return std::make_unique<PpcWriter>(); }

int ReadPpc64Vcpu(const vmsnap_snapshot* s, uint32_t vcpu, vmsnap_state what, void* buf, size_t buf_size,
                  size_t* size) {
  MemVcpu st(vcpu);
  Status r = restore::ppc64::RestoreVcpu(st, LeafManifest(s).getVcpus()[vcpu].getPpc64());
  if (!r.ok()) return Fail(r.Context("snapshot " + SnapshotPath(s) + ", vCPU " + std::to_string(vcpu)));
  switch (what) {
    case VMSNAP_PPC64_REGS: return Answer(s, st.regs, "ppc64 REGS", buf, buf_size, size);
    case VMSNAP_PPC64_SREGS: return Answer(s, st.sregs, "ppc64 SREGS", buf, buf_size, size);
    case VMSNAP_ONE_REGS: return AnswerOneRegs(st.one, buf, buf_size, size);
    default: return NotStateOf(what, "ppc64 per-vCPU");
  }
}

int ReadPpc64Vm(const vmsnap_snapshot* s, vmsnap_state what, void* buf, size_t buf_size, size_t* size) {
  if (what != VMSNAP_PPC64_HTAB) return NotStateOf(what, "ppc64 VM");
  MemVm vm;
  Status r = restore::ppc64::RestoreHtab(vm, LeafManifest(s).getVm().getPpc64().getHtab());
  if (!r.ok()) return Fail(r.Context("snapshot " + SnapshotPath(s)));
  if (!vm.htab) return Missing(s, "ppc64 HTAB");
  return CopyOut(vm.htab->data(), vm.htab->size(), buf, buf_size, size);
}

}  // namespace vmsnap::capi
