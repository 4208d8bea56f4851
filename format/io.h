// SPDX-License-Identifier: MIT
// The I/O seam of the format library: the writer reaches the file system only
// through Env, so tests can inject ENOSPC, short writes and fsync failures.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/status.h"

namespace vmsnap {

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Writes all of [data, data+len) or fails; a short write is retried, not reported.
  virtual Status Append(const void* data, size_t len) = 0;
  // Advances by `len` zero bytes. A regular file leaves a hole there (the
  // size is fixed at Sync()); a stream gets the zeros written.
  virtual Status Skip(uint64_t len);
  virtual Status Sync() = 0;   // fdatasync/fsync
  virtual Status Close() = 0;
};

class Env {
 public:
  virtual ~Env() = default;
  // Creates `path` exclusively (O_CREAT|O_EXCL) with the given mode, and
  // holds an exclusive flock(2) on it while open: a temporary file whose
  // lock can be taken belongs to no live writer (see format/output.h).
  virtual Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path,
                                                                unsigned mode) = 0;
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Remove(const std::string& path) = 0;
  virtual Status SyncDir(const std::string& dir) = 0;
  // Opens an existing FIFO or character device (or, for "-", standard
  // output) for writing in order, without creating or truncating anything.
  virtual Result<std::unique_ptr<WritableFile>> OpenStream(const std::string& path);

  // The real file system. Never null, never freed.
  static Env* Default();
};

}  // namespace vmsnap
