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
  virtual Status Sync() = 0;   // fdatasync/fsync
  virtual Status Close() = 0;
};

class Env {
 public:
  virtual ~Env() = default;
  // Creates `path` exclusively (O_CREAT|O_EXCL) with the given mode.
  virtual Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path,
                                                                unsigned mode) = 0;
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Remove(const std::string& path) = 0;
  virtual Status SyncDir(const std::string& dir) = 0;

  // The real file system. Never null, never freed.
  static Env* Default();
};

}  // namespace vmsnap
