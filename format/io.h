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
  // Positioned writes and the final size, for outputs written out of order
  // with holes (export). Doubles that only append need not provide them.
  virtual Status WriteAt(uint64_t offset, const void* data, size_t len) {
    return Status::Unsupported("positioned writes");
  }
  virtual Status Truncate(uint64_t size) { return Status::Unsupported("truncate"); }
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

// The one way vmsnap writes an output file (snapshots, exports): under a
// temporary name in the destination's directory (".NAME.tmp-XXXXXXXX", so
// the rename is atomic and a leftover is recognisable), created exclusively
// with mode 0600 (outputs hold guest memory), synced, then renamed over the
// destination. Until Commit() succeeds the destination is untouched; an
// uncommitted temporary is removed when the AtomicFile goes.
class AtomicFile {
 public:
  static Result<std::unique_ptr<AtomicFile>> Create(Env* env, const std::string& path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  WritableFile& file() { return *file_; }
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return tmp_; }
  // Syncs, closes, renames over path() and syncs the directory. committed()
  // tells a failure before the rename (nothing changed) from a failing
  // directory sync after it (the file is in place but may not be durable).
  Status Commit();
  bool committed() const { return committed_; }
  // Closes and removes the temporary now.
  void Abandon();

 private:
  AtomicFile(Env* env, std::string path, std::string dir, std::string tmp, std::unique_ptr<WritableFile> file)
      : env_(env), path_(std::move(path)), dir_(std::move(dir)), tmp_(std::move(tmp)), file_(std::move(file)) {}
  Env* env_;
  std::string path_, dir_, tmp_;
  std::unique_ptr<WritableFile> file_;
  bool committed_ = false;
};

}  // namespace vmsnap
