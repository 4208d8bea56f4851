// SPDX-License-Identifier: MIT
// OutputFile: the one way vmsnap writes a file (snapshots, flatten, export,
// read). A regular file is written under a temporary name in the same
// directory (`.NAME.tmp-XXXXXXXX`), fsynced and renamed over NAME, then the
// directory is fsynced: a failed or interrupted write leaves what was at NAME
// untouched. Whatever exists at NAME and is not a regular file is never
// replaced: a FIFO or character device is written through when the caller
// writes a stream, anything else is refused. A destination that is one of
// the command's inputs is refused too.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/io.h"
#include "base/status.h"

namespace vmsnap {

struct OutputOptions {
  Env* env = nullptr;  // nullptr = Env::Default()
  unsigned mode = 0600;
  // The caller writes in order and needs no seek back: the output may be
  // standard output ("-"), a FIFO or a character device, written through.
  bool stream_ok = false;
  // Files the command reads (a snapshot and its parents): refused as the
  // destination, since replacing one would destroy what is being read.
  std::vector<std::string> inputs;
  // What the output is, for messages ("snapshot", "export").
  std::string what = "output";
};

class OutputFile {
 public:
  static Result<std::unique_ptr<OutputFile>> Create(const std::string& path, const OutputOptions& options);
  // Without a successful Commit(), removes the temporary file.
  ~OutputFile();
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  // The caller's path: what every error message names.
  const std::string& path() const { return path_; }
  bool streaming() const { return streaming_; }
  // True once the output is in place (even if the directory sync then failed).
  bool committed() const { return committed_; }
  // Bytes written or skipped so far.
  uint64_t offset() const { return offset_; }

  Status Append(const void* data, size_t len);
  // Zeros up to `offset` (a hole in a regular file); never backwards.
  Status SkipTo(uint64_t offset);
  // fsync, rename into place, fsync the directory. For a stream: only
  // checks that everything was written.
  Status Commit();

 private:
  OutputFile() = default;
  Status Named(const Status& s) const;  // the temporary's name replaced by path_

  Env* env_ = nullptr;
  std::string path_;  // as the caller gave it
  std::string dest_;  // the file renamed over (a symlink's target)
  std::string dir_, tmp_;
  std::unique_ptr<WritableFile> file_;
  bool streaming_ = false;
  bool committed_ = false;
  int registry_slot_ = -1;
  uint64_t offset_ = 0;
};

// Removes every temporary file an OutputFile of this process has open.
// Async-signal-safe: for a SIGINT/SIGTERM handler, which then lets the
// signal end the process. Never installs a handler itself.
void RemoveTemporaryOutputs();

// Removes temporary files left beside `dest` by writers that no longer run
// (killed with SIGKILL, power loss): `.NAME.tmp-XXXXXXXX` whose lock can be
// taken. OutputFile::Create calls it; exposed for tests.
void RemoveStaleTemporaries(const std::string& dest);

}  // namespace vmsnap
