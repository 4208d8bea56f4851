// SPDX-License-Identifier: MIT
// The arch-neutral capture driver: turns a paused VM (its arch state through
// an ArchCapturer, its memory through GuestRegion views) into a .vmsnap file.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "format/load_history.h"
#include "format/writer.h"
#include "kvm/kvm.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::capture {

// Fills the architecture-specific parts of a manifest (arch, vcpus, vm) from a
// VM whose vCPUs are all paused. One per architecture.
class ArchCapturer {
 public:
  virtual ~ArchCapturer() = default;
  virtual schema::Arch arch() const = 0;
  virtual uint32_t page_size() const = 0;
  virtual Status Capture(schema::Manifest::Builder manifest) = 0;
};

// Feeds guest memory to the writer. The default feeds every page of every
// region (a full snapshot); an incremental snapshot supplies one that feeds
// only the pages a dirty tracker reports (SnapshotWriter::AddPages).
class MemorySource {
 public:
  virtual ~MemorySource() = default;
  virtual Status Feed(std::span<const kvm::GuestRegion> regions, SnapshotWriter& writer) = 0;
};

class FullMemory final : public MemorySource {
 public:
  Status Feed(std::span<const kvm::GuestRegion> regions, SnapshotWriter& writer) override;
};

struct CaptureOptions {
  WriterOptions writer;
  std::string tool_version = "unknown";
  MemorySource* memory = nullptr;  // nullptr: FullMemory
  // Filled by the caller when it knows (how long the vCPUs were paused).
  uint64_t pause_ns = 0;
  // SaveStats of a live save (capture/dirty/live.h): memory copy rounds.
  bool live = false;
  uint32_t rounds = 1;
  // The VM's lineage, oldest first; written as the "vmsnap.loads" device
  // record when not empty (docs/format.md, "Load history").
  std::vector<LoadRecord> loads;
};

struct CaptureResult {
  std::string path;
  uint64_t file_size = 0;
  layout::SnapshotId id{};
};

// Host and time facts for Manifest.created: tool version, uname -r,
// /proc/cpuinfo "model name", hostname, wall time.
void FillCreation(schema::Creation::Builder created, const std::string& tool_version);

// Writes a snapshot of the paused VM to `path` (atomically, mode 0600).
// `regions` must not overlap; they are written in guest-physical order.
Result<CaptureResult> WriteSnapshot(const std::string& path, ArchCapturer& arch,
                                    std::span<const kvm::GuestRegion> regions,
                                    const CaptureOptions& options);

}  // namespace vmsnap::capture
