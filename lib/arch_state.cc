// SPDX-License-Identifier: MIT
// What the s390x, ppc64 and aarch64 state files share: the VMSNAP_ONE_REGS
// layout and the answers naming a snapshot.
#include "lib/arch_state.h"

#include <linux/kvm.h>

#include <algorithm>
#include <cerrno>

#include <cstdio>

#include "lib/internal.h"

namespace vmsnap::capi {

int MemVcpuState::ReadOneReg(const kvm_one_reg& r, bool absent_is_normal) {
  asked.push_back(r.id);
  for (const OneReg& o : one) {
    if (o.id != r.id) continue;
    std::memcpy(reinterpret_cast<void*>(r.addr), o.value.data(), o.value.size());
    return 0;
  }
  if (!absent_is_normal) {
    missing = "vCPU " + std::to_string(index_) + " has no register " + IdHex(r.id) +
              " in its VMSNAP_ONE_REGS (vmsnap_writer_set_vcpu_state)";
  }
  return -ENOENT;
}

int MemVcpuState::WriteOneReg(const kvm_one_reg& r) {
  const auto* p = reinterpret_cast<const uint8_t*>(r.addr);
  std::vector<uint8_t> v(p, p + OneRegBytes(r.id));
  for (OneReg& o : one) {
    if (o.id == r.id) {
      o.value = std::move(v);
      return 0;
    }
  }
  one.push_back({r.id, std::move(v)});
  return 0;
}

int MemVcpuState::Absent(const char* name) {
  missing = "vCPU " + std::to_string(index_) + " has no " + name + " state (vmsnap_writer_set_vcpu_state)";
  return -ENOENT;
}

size_t OneRegBytes(uint64_t id) { return size_t{1} << ((id >> 52) & 0xf); }

Result<std::vector<OneReg>> ParseOneRegs(const void* buf, size_t size) {
  const auto* p = static_cast<const uint8_t*>(buf);
  std::vector<OneReg> out;
  size_t off = 0;
  while (off < size) {
    if (size - off < 8) {
      return Status::InvalidArgument("VMSNAP_ONE_REGS: record " + std::to_string(out.size()) + " at byte " +
                                     std::to_string(off) + " is cut short in its id");
    }
    uint64_t id;
    std::memcpy(&id, p + off, 8);
    const size_t n = OneRegBytes(id);
    if (n > 256) {
      return Status::InvalidArgument("VMSNAP_ONE_REGS: register " + IdHex(id) + " at byte " + std::to_string(off) +
                                     " claims " + std::to_string(n) + " bytes; at most 256 are supported");
    }
    if (size - off - 8 < n) {
      return Status::InvalidArgument("VMSNAP_ONE_REGS: register " + IdHex(id) + " at byte " + std::to_string(off) +
                                     " needs " + std::to_string(n) + " value bytes, " +
                                     std::to_string(size - off - 8) + " remain");
    }
    for (const OneReg& r : out) {
      if (r.id == id) {
        return Status::InvalidArgument("VMSNAP_ONE_REGS: register " + IdHex(id) + " appears twice");
      }
    }
    out.push_back({id, std::vector<uint8_t>(p + off + 8, p + off + 8 + n)});
    off += 8 + n;
  }
  return out;
}

std::vector<uint8_t> EncodeOneRegs(const std::vector<OneReg>& regs) {
  std::vector<uint8_t> out;
  for (const OneReg& r : regs) {
    const auto* id = reinterpret_cast<const uint8_t*>(&r.id);
    out.insert(out.end(), id, id + 8);
    out.insert(out.end(), r.value.begin(), r.value.end());
  }
  return out;
}

int Missing(const vmsnap_snapshot* s, const std::string& what) {
  return Fail(Status::NotFound("snapshot " + s->path + " holds no " + what));
}

int NotStateOf(vmsnap_state what, const char* kind) {
  return Invalid("state " + std::to_string(static_cast<int>(what)) + " is not " + kind + " state");
}

schema::Manifest::Reader LeafManifest(const vmsnap_snapshot* s) { return s->chain->leaf().manifest(); }

const std::string& SnapshotPath(const vmsnap_snapshot* s) { return s->path; }

std::string IdHex(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(id));
  return buf;
}

Status CheckOneRegsStored(const std::vector<OneReg>& given, const std::vector<uint64_t>& asked, size_t vcpu,
                          const char* arch) {
  for (const OneReg& r : given) {
    if (std::find(asked.begin(), asked.end(), r.id) == asked.end()) {
      return Status::InvalidArgument("vCPU " + std::to_string(vcpu) + ": register " + IdHex(r.id) +
                                     " of VMSNAP_ONE_REGS is not one " + arch + " snapshot stores");
    }
  }
  return Status::Ok();
}

int StoreOneRegs(std::vector<OneReg>& slot, const void* buf, size_t size) {
  auto r = ParseOneRegs(buf, size);
  if (!r.ok()) return Fail(r.status());
  slot = std::move(r).value();
  return Ok();
}

int AnswerOneRegs(const std::vector<OneReg>& regs, void* buf, size_t buf_size, size_t* size) {
  const std::vector<uint8_t> bytes = EncodeOneRegs(regs);
  return CopyOut(bytes.data(), bytes.size(), buf, buf_size, size);
}

}  // namespace vmsnap::capi
