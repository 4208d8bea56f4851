// SPDX-License-Identifier: MIT
// Streaming writer of .vmsnap files: memory chunks first, then the manifest and
// the footer. Writes through OutputFile (format/output.h): a temporary name
// beside the destination, fsync, rename, so an existing file at the
// destination is never damaged by a failed save, and a destination that is
// not a regular file is refused. Files are created mode 0600: they hold
// guest memory.
#pragma once

#include <capnp/message.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/progress.h"
#include "base/status.h"
#include "format/io.h"
#include "format/layout.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap {

struct WriterOptions {
  schema::Compression compression = schema::Compression::ZSTD;
  int zstd_level = 3;
  // The adaptive codec (`--compress auto`; needs compression ZSTD): each
  // chunk is stored raw or compressed at a zstd level from 1 up to
  // `zstd_level`, re-chosen while saving (the writer's AdaptLocked) from how
  // busy the process and the machine keep the cores, and how long the I/O
  // thread waits for the disk or for the workers: a slow output gets
  // smaller chunks, busy cores more raw ones; a chunk whose sampled pages
  // look incompressible is stored raw without running zstd. Raw chunks stay
  // page-aligned (mappable) and every chunk is checksummed, as with a fixed
  // codec.
  bool adaptive = false;
  uint32_t page_size = 4096;
  uint32_t chunk_pages = 256;  // pages a chunk covers at most (1 MiB of 4 KiB pages)
  unsigned threads = 0;        // compression workers; 0 = one per core
  Env* env = nullptr;          // nullptr = Env::Default()
  // Called with (bytes done, bytes total) as memory is processed, on the
  // writer's I/O thread. `done` counts memory in the order it was added, and
  // is reported only once the chunks covering it are written: from then on
  // the writer never reads the first `done` bytes added again, so a caller
  // that streams memory through a few buffers (flatten) may reuse those.
  ProgressFn progress;         // may be empty
  uint64_t progress_total = 0; // bytes of memory the caller will add, for progress
  // Files the caller reads while writing (the parent of an incremental
  // snapshot, the chain being flattened): refused as the destination.
  std::vector<std::string> inputs;
  // Minor format version in the header and manifest: the lowest whose features
  // the snapshot uses (layout::kMinorAarch64 for an aarch64 one). Commit()
  // refuses a manifest that needs a newer minor than this says.
  uint16_t format_minor = 0;
  // For tests: runs on a compression worker before each chunk it
  // compresses, with the chunk's zstd level (a throttled compressor).
  std::function<void(int level)> before_compress;
  // For tests: the fraction of all cores' time the machine was busy since
  // the previous call, which the adaptive codec otherwise reads from
  // /proc/stat (so that a test does not depend on the machine's load).
  std::function<double()> machine_busy;
};

class SnapshotWriter {
 public:
  // Creates `<dir>/.<name>.tmp-<random>` beside `path`; nothing appears at
  // `path` until Commit() succeeds.
  static Result<std::unique_ptr<SnapshotWriter>> Create(const std::string& path,
                                                         const WriterOptions& options);
  // Without a successful Commit(), removes the temporary file.
  // Threads: AddMemory/AddPages/Commit from one thread. The progress
  // callback runs on the writer's I/O thread.
  virtual ~SnapshotWriter() = default;

  // The manifest under construction. The caller fills everything except
  // formatMajor/formatMinor and chunks, which the writer owns.
  virtual schema::Manifest::Builder manifest() = 0;

  // Page store input. [gpa, gpa+len) must be page-aligned and come after every
  // range added before (ascending, non-overlapping). Every page of the range
  // becomes defined by this snapshot: zero pages are recorded as zero and
  // never stored, the others are stored. `data` is read once, before return
  // or (with worker threads) before the next call that returns an error,
  // Commit() returns, or the writer is destroyed; the caller keeps it
  // unchanged and alive until then.
  virtual Status AddMemory(uint64_t gpa, const uint8_t* data, uint64_t len) = 0;

  // As AddMemory, but only the pages whose bit is set in `defined` (one bit
  // per page of the range, LSB first) are defined; the others are left to the
  // parent snapshot. For incremental snapshots.
  virtual Status AddPages(uint64_t gpa, const uint8_t* data, uint64_t len,
                          const uint8_t* defined) = 0;

  // Writes the chunk index, the manifest and the footer; fsyncs; renames into
  // place; fsyncs the directory.
  virtual Status Commit() = 0;

  // Valid after Commit().
  virtual layout::SnapshotId id() const = 0;
  virtual uint64_t file_size() const = 0;
};

}  // namespace vmsnap
