// SPDX-License-Identifier: MIT
// The arch-neutral capture driver: see capture.h.
#include "capture/capture.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>

#include "format/compression_spec.h"

namespace vmsnap::capture {
namespace {

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon == std::string::npos) break;
      auto start = line.find_first_not_of(" \t", colon + 1);
      return start == std::string::npos ? std::string() : line.substr(start);
    }
  }
  return "";
}

std::vector<kvm::GuestRegion> SortedByGpa(std::span<const kvm::GuestRegion> regions) {
  std::vector<kvm::GuestRegion> v(regions.begin(), regions.end());
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.gpa < b.gpa; });
  return v;
}

}  // namespace

Status FullMemory::Feed(std::span<const kvm::GuestRegion> regions, SnapshotWriter& writer) {
  for (const kvm::GuestRegion& r : SortedByGpa(regions)) {
    VMSNAP_RETURN_IF_ERROR(writer.AddMemory(r.gpa, r.host, r.size).Context("memory region " + r.name));
  }
  return Status::Ok();
}

void FillCreation(schema::Creation::Builder created, const std::string& tool_version) {
  created.setToolVersion(tool_version);
  utsname u{};
  if (::uname(&u) == 0) created.setHostKernel(u.release);
  created.setHostCpu(CpuModelName());
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) created.setHostName(host);
  created.setTimeUnixNs(std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count());
}

Result<CaptureResult> WriteSnapshot(const std::string& path, ArchCapturer& arch,
                                    std::span<const kvm::GuestRegion> regions,
                                    const CaptureOptions& options) {
  auto start = std::chrono::steady_clock::now();
  std::vector<kvm::GuestRegion> sorted = SortedByGpa(regions);
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i - 1].gpa + sorted[i - 1].size > sorted[i].gpa) {
      return Status::InvalidArgument("memory regions " + sorted[i - 1].name + " and " + sorted[i].name +
                                     " overlap");
    }
  }
  WriterOptions wopts = options.writer;
  // The lowest format minor that holds this architecture's state.
  if (arch.arch() == schema::Arch::AARCH64)
    wopts.format_minor = std::max(wopts.format_minor, layout::kMinorAarch64);
  wopts.page_size = arch.page_size();
  if (wopts.progress_total == 0) {
    for (const auto& r : sorted) wopts.progress_total += r.size;
  }
  VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotWriter> writer, SnapshotWriter::Create(path, wopts));
  schema::Manifest::Builder m = writer->manifest();
  m.setArch(arch.arch());
  FillCreation(m.initCreated(), options.tool_version);
  auto map = m.initMemory();
  map.setPageSize(arch.page_size());
  auto list = map.initRegions(static_cast<unsigned>(sorted.size()));
  for (size_t i = 0; i < sorted.size(); ++i) {
    auto r = list[static_cast<unsigned>(i)];
    r.setSlot(sorted[i].slot);
    r.setGuestPhysAddr(sorted[i].gpa);
    r.setSize(sorted[i].size);
    r.setFlags(sorted[i].flags);
    r.setName(sorted[i].name);
  }
  VMSNAP_RETURN_IF_ERROR(arch.Capture(m));
  if (!options.loads.empty()) {
    // The load history is the only device record a capture writes: the
    // architectures keep their state in the manifest's own fields.
    if (m.hasDevices()) return Status::Internal("the architecture's capture wrote device records");
    auto rec = m.initDevices(1)[0];
    rec.setName(kLoadHistoryRecord);
    rec.setVersion(kLoadHistoryVersion);
    const std::vector<uint8_t> data = EncodeLoadHistory(options.loads);
    rec.setData(capnp::Data::Reader(data.data(), data.size()));
  }
  FullMemory full;
  MemorySource* source = options.memory ? options.memory : &full;
  VMSNAP_RETURN_IF_ERROR(source->Feed(sorted, *writer));
  auto stats = m.initSave();
  stats.setLive(options.live);
  stats.setRounds(options.rounds);
  stats.setPauseNs(options.pause_ns);
  stats.setCompression(CompressionText(wopts));
  stats.setDurationNs(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                std::chrono::steady_clock::now() - start)
                                                .count()));
  VMSNAP_RETURN_IF_ERROR(writer->Commit());
  CaptureResult res;
  res.path = path;
  res.file_size = writer->file_size();
  res.id = writer->id();
  return res;
}

}  // namespace vmsnap::capture
