// SPDX-License-Identifier: MIT
// Region bookkeeping and the chain-backed PhysicalMemory.
#include "guest/memory.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace vmsnap::guest {

Result<std::vector<Region>> RegionsOf(schema::Manifest::Reader manifest) {
  std::vector<Region> out;
  for (auto r : manifest.getMemory().getRegions()) {
    if (r.getSize() == 0) continue;
    Region region{r.getGuestPhysAddr(), r.getSize(), std::string(r.getName().cStr())};
    if (region.gpa + region.size < region.gpa) {
      return Status::Corruption("memory region at " + Hex(region.gpa) + " of size " +
                                Hex(region.size) + " wraps past the end of the address space");
    }
    out.push_back(std::move(region));
  }
  std::sort(out.begin(), out.end(), [](const Region& a, const Region& b) { return a.gpa < b.gpa; });
  for (size_t i = 1; i < out.size(); ++i) {
    if (out[i].gpa < out[i - 1].end()) {
      return Status::Corruption("memory regions at " + Hex(out[i - 1].gpa) + " and " +
                                Hex(out[i].gpa) + " overlap");
    }
  }
  return out;
}

Status CheckInside(const std::vector<Region>& regions, uint64_t gpa, uint64_t len) {
  if (len == 0) return Status::Ok();
  if (gpa + len < gpa) {
    return Status::InvalidArgument("range " + Hex(gpa) + "+" + Hex(len) +
                                   " wraps past the end of the address space");
  }
  uint64_t at = gpa;
  const uint64_t end = gpa + len;
  // Regions are sorted and disjoint, so walk forward through the ones that
  // cover `at`; a gap anywhere in the range is an error.
  for (const Region& r : regions) {
    if (r.end() <= at) continue;
    if (r.gpa > at) break;
    at = r.end();
    if (at >= end) return Status::Ok();
  }
  std::string where = "guest-physical address " + Hex(at) + " is outside guest memory";
  if (regions.empty()) return Status::InvalidArgument(where + " (the snapshot has no memory)");
  return Status::InvalidArgument(where + " (memory ends at " + Hex(regions.back().end()) + ")");
}

Result<std::unique_ptr<ChainMemory>> ChainMemory::Create(const SnapshotChain& chain) {
  VMSNAP_ASSIGN_OR_RETURN(std::vector<Region> regions, RegionsOf(chain.leaf().manifest()));
  return std::unique_ptr<ChainMemory>(new ChainMemory(chain, std::move(regions)));
}

Status ChainMemory::Read(uint64_t gpa, uint64_t len, uint8_t* out) const {
  VMSNAP_RETURN_IF_ERROR(CheckInside(regions_, gpa, len));
  return chain_.ReadMemory(gpa, len, out);
}

}  // namespace vmsnap::guest
