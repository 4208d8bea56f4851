// SPDX-License-Identifier: MIT
// The load history a snapshot may carry: every start (a boot, then each load
// of a snapshot) that led to the VM it holds, with the generation ID each
// start gave the guest. Stored as the device record "vmsnap.loads" so that
// the manifest's layout stays as it was (docs/format.md, "Load history").
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/status.h"
#include "format/layout.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap {

struct LoadRecord {
  std::array<uint8_t, 16> generation_id{};
  std::optional<layout::SnapshotId> snapshot_id;  // nullopt: a boot (`vmsnap run`)
  int64_t time_unix_ns = 0;
  bool warm = false;  // started in a warm VM (`vmsnap load --via`)
};

inline constexpr char kLoadHistoryRecord[] = "vmsnap.loads";
inline constexpr uint32_t kLoadHistoryVersion = 1;
// Bytes per entry in the record's data (docs/format.md).
inline constexpr size_t kLoadRecordBytes = 48;
// More entries than this are dropped from the oldest end when a record is
// written, so a VM cloned from clones for ever keeps a bounded manifest.
inline constexpr size_t kMaxLoadRecords = 1024;

std::vector<uint8_t> EncodeLoadHistory(std::span<const LoadRecord> loads);
Result<std::vector<LoadRecord>> DecodeLoadHistory(std::span<const uint8_t> data);
// The history in `m`, oldest first; empty when the snapshot has none.
// Corruption when the record is there but malformed or of another version.
Result<std::vector<LoadRecord>> LoadHistoryOf(schema::Manifest::Reader m);

}  // namespace vmsnap
