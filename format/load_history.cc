// SPDX-License-Identifier: MIT
// See load_history.h; the byte layout is docs/format.md's "Load history".
#include "format/load_history.h"

#include <cstring>
#include <string>

namespace vmsnap {
namespace {

constexpr uint32_t kFlagLoaded = 1;  // snapshot_id names the snapshot loaded
constexpr uint32_t kFlagWarm = 2;

}  // namespace

std::vector<uint8_t> EncodeLoadHistory(std::span<const LoadRecord> loads) {
  if (loads.size() > kMaxLoadRecords) loads = loads.subspan(loads.size() - kMaxLoadRecords);
  std::vector<uint8_t> out(loads.size() * kLoadRecordBytes, 0);
  uint8_t* p = out.data();
  for (const LoadRecord& l : loads) {
    std::memcpy(p, l.generation_id.data(), 16);
    if (l.snapshot_id) std::memcpy(p + 16, l.snapshot_id->data(), 16);
    layout::PutLe64(p + 32, uint64_t(l.time_unix_ns));
    layout::PutLe32(p + 40, (l.snapshot_id ? kFlagLoaded : 0) | (l.warm ? kFlagWarm : 0));
    p += kLoadRecordBytes;
  }
  return out;
}

Result<std::vector<LoadRecord>> DecodeLoadHistory(std::span<const uint8_t> data) {
  if (data.size() % kLoadRecordBytes != 0 || data.size() / kLoadRecordBytes > kMaxLoadRecords) {
    return Status::Corruption("device record \"" + std::string(kLoadHistoryRecord) + "\": " +
                              std::to_string(data.size()) + " bytes is not a list of at most " +
                              std::to_string(kMaxLoadRecords) + " entries of " +
                              std::to_string(kLoadRecordBytes) + " bytes");
  }
  std::vector<LoadRecord> loads(data.size() / kLoadRecordBytes);
  const uint8_t* p = data.data();
  for (size_t i = 0; i < loads.size(); ++i, p += kLoadRecordBytes) {
    LoadRecord& l = loads[i];
    const uint32_t flags = layout::GetLe32(p + 40);
    if ((flags & ~(kFlagLoaded | kFlagWarm)) != 0 || layout::GetLe32(p + 44) != 0) {
      return Status::Corruption("device record \"" + std::string(kLoadHistoryRecord) + "\": entry " +
                                std::to_string(i) + " has unknown flags or non-zero reserved bytes");
    }
    std::memcpy(l.generation_id.data(), p, 16);
    if (flags & kFlagLoaded) {
      l.snapshot_id.emplace();
      std::memcpy(l.snapshot_id->data(), p + 16, 16);
    }
    l.time_unix_ns = int64_t(layout::GetLe64(p + 32));
    l.warm = (flags & kFlagWarm) != 0;
  }
  return loads;
}

Result<std::vector<LoadRecord>> LoadHistoryOf(schema::Manifest::Reader m) {
  for (auto d : m.getDevices()) {
    if (d.getName() != kLoadHistoryRecord) continue;
    if (d.getVersion() != kLoadHistoryVersion) {
      return Status::Corruption("device record \"" + std::string(kLoadHistoryRecord) + "\" has version " +
                                std::to_string(d.getVersion()) + ", this reader knows " +
                                std::to_string(kLoadHistoryVersion));
    }
    auto data = d.getData();
    return DecodeLoadHistory(std::span<const uint8_t>(data.begin(), data.size()));
  }
  return std::vector<LoadRecord>{};
}

}  // namespace vmsnap
