// SPDX-License-Identifier: MIT
// Guest RAM regions: see memory.h.
#include "vmm/memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>

namespace vmsnap::vmm {

Status GuestMemory::AddRegion(int fd, uint64_t file_offset, uint64_t gpa, uint64_t size, uint32_t slot,
                              uint32_t flags, const std::string& name) {
  // Anonymous RAM is private and not reserved up front: untouched guest pages
  // cost nothing. File-backed RAM is shared so the file sees guest writes.
  const std::string what = "cannot map " + std::to_string(size) + " bytes of guest RAM";
  auto map = fd >= 0 ? Mapping::Map(size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(file_offset), what)
                     : Mapping::Anonymous(size, what);
  if (!map.ok()) return Status(Code::kInternal, map.status().message());
  std::unique_ptr<MemoryRegion> r(new MemoryRegion());
  r->map_ = std::move(map).value();
  r->file_backed_ = fd >= 0;
  r->view_.slot = slot;
  r->view_.flags = flags;
  r->view_.gpa = gpa;
  r->view_.size = size;
  r->view_.host = r->map_.data();
  r->view_.name = name;
  regions_.push_back(std::move(r));
  return Status::Ok();
}

Result<std::unique_ptr<GuestMemory>> GuestMemory::Create(uint64_t size, const std::string& file) {
  auto mem = std::unique_ptr<GuestMemory>(new GuestMemory());
  int fd = -1;
  if (!file.empty()) {
    fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      return Status::FromErrno(err, "cannot open --mem-file " + file);
    }
    mem->file_ = UniqueFd(fd);
    struct stat st {};
    if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, "cannot stat --mem-file " + file);
    size = static_cast<uint64_t>(st.st_size);
  }
  if (size == 0 || size % 4096 != 0) {
    return Status::InvalidArgument("guest RAM size " + std::to_string(size) + " is not a positive multiple of 4096");
  }
  uint64_t low = size < kLowMemEnd ? size : kLowMemEnd;
  VMSNAP_RETURN_IF_ERROR(mem->AddRegion(fd, 0, 0, low, 0, 0, "ram-low"));
  if (size > low) VMSNAP_RETURN_IF_ERROR(mem->AddRegion(fd, low, kHighMemStart, size - low, 1, 0, "ram-high"));
  return mem;
}

Result<std::unique_ptr<GuestMemory>> GuestMemory::CreateRegions(const std::vector<kvm::GuestRegion>& layout) {
  auto mem = std::unique_ptr<GuestMemory>(new GuestMemory());
  for (const auto& r : layout) {
    if (r.size == 0 || r.size % 4096 != 0 || r.gpa % 4096 != 0) {
      return Status::Corruption("memory region " + r.name + " is not page-aligned");
    }
    VMSNAP_RETURN_IF_ERROR(mem->AddRegion(-1, 0, r.gpa, r.size, r.slot, r.flags, r.name));
  }
  return mem;
}

std::vector<kvm::GuestRegion> GuestMemory::views() const {
  std::vector<kvm::GuestRegion> v;
  for (const auto& r : regions_) v.push_back(r->view());
  return v;
}

uint64_t GuestMemory::total_size() const {
  uint64_t t = 0;
  for (const auto& r : regions_) t += r->size();
  return t;
}

uint64_t GuestMemory::top() const {
  uint64_t t = 0;
  for (const auto& r : regions_) t = std::max(t, r->gpa() + r->size());
  return t;
}

uint8_t* GuestMemory::HostPtr(uint64_t gpa, uint64_t len) const {
  for (const auto& r : regions_) {
    if (gpa >= r->gpa() && len <= r->size() && gpa - r->gpa() <= r->size() - len) {
      return r->host() + (gpa - r->gpa());
    }
  }
  return nullptr;
}

}  // namespace vmsnap::vmm
