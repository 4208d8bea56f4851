// SPDX-License-Identifier: MIT
// Env::Default: the POSIX file system behind the format library's I/O seam.
#include "format/io.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "base/fd.h"

namespace vmsnap {
namespace {

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(UniqueFd fd, std::string path, bool stream = false)
      : fd_(std::move(fd)), path_(std::move(path)), stream_(stream) {}

  Status Append(const void* data, size_t len) override {
    const char* p = static_cast<const char*>(data);
    while (len > 0) {
      ssize_t n = ::write(fd_.get(), p, len);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "write " + path_);
      }
      if (n == 0) return Status::Io("write " + path_ + ": wrote 0 bytes");
      p += n;
      len -= static_cast<size_t>(n);
      written_ += static_cast<uint64_t>(n);
    }
    pos_ = written_;
    if (stream_) return Status::Ok();
    // Start writeback of what is complete every kWritebackStep bytes, so
    // the disk works while later chunks are still being compressed and the
    // final fsync waits only for the tail. A hint: an error here is not
    // reported (Sync() reports the real outcome).
    if (written_ - kicked_ >= kWritebackStep) {
      (void)::sync_file_range(fd_.get(), static_cast<off64_t>(kicked_), static_cast<off64_t>(written_ - kicked_),
                              SYNC_FILE_RANGE_WRITE);
      kicked_ = written_;
      // And wait for the writeback started kWritebackLag bytes ago: a disk
      // slower than the writer then slows the writer, where the adaptive
      // codec sees it (and compresses harder), instead of piling up dirty
      // pages for the final fsync to wait on; dirty memory stays bounded too.
      if (kicked_ >= waited_ + kWritebackLag + kWritebackStep) {
        const uint64_t upto = kicked_ - kWritebackLag;
        (void)::sync_file_range(fd_.get(), static_cast<off64_t>(waited_), static_cast<off64_t>(upto - waited_),
                                SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
        waited_ = upto;
      }
    }
    return Status::Ok();
  }

  Status Skip(uint64_t len) override {
    if (stream_) return WritableFile::Skip(len);
    if (::lseek(fd_.get(), static_cast<off_t>(len), SEEK_CUR) < 0) return Status::FromErrno(errno, "seek " + path_);
    written_ += len;
    return Status::Ok();
  }

  Status Sync() override {
    // A pipe or a device has nothing to make durable (fsync fails there).
    if (stream_) return Status::Ok();
    // A trailing hole left by Skip() still has to count in the size.
    if (written_ > pos_ && ::ftruncate(fd_.get(), static_cast<off_t>(written_)) != 0) {
      return Status::FromErrno(errno, "set the size of " + path_);
    }
    pos_ = written_;
    if (::fsync(fd_.get()) != 0) return Status::FromErrno(errno, "fsync " + path_);
    return Status::Ok();
  }

  Status Close() override {
    if (!fd_.valid()) return Status::Ok();
    const int fd = fd_.Release();
    // close() can report a delayed write error (NFS); it must not be lost.
    if (::close(fd) != 0) return Status::FromErrno(errno, "close " + path_);
    return Status::Ok();
  }

 private:
  static constexpr uint64_t kWritebackStep = 8ull << 20;
  UniqueFd fd_;
  std::string path_;
  bool stream_;
  uint64_t written_ = 0;  // the current offset (the file is written in order)
  uint64_t pos_ = 0;      // the end of the last byte actually written
  uint64_t kicked_ = 0;   // bytes whose writeback has been started
  uint64_t waited_ = 0;   // bytes whose writeback has been waited for
  static constexpr uint64_t kWritebackLag = 64ull << 20;
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path,
                                                        unsigned mode) override {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    if (!fd.valid()) return Status::FromErrno(errno, "create " + path);
    // The umask may have narrowed the mode; it must never widen it, but a
    // restrictive umask must not leave the owner unable to read its snapshot.
    const char* step = ::fchmod(fd.get(), mode) != 0                     ? "chmod "
                       : ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0 ? "lock "
                                                                   : nullptr;
    if (step != nullptr) {
      int e = errno;
      fd.Reset();
      ::unlink(path.c_str());
      return Status::FromErrno(e, step + path);
    }
    return std::unique_ptr<WritableFile>(new PosixWritableFile(std::move(fd), path));
  }

  Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return Status::FromErrno(errno, "rename " + from + " to " + to);
    }
    return Status::Ok();
  }

  Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Status::FromErrno(errno, "remove " + path);
    return Status::Ok();
  }

  Result<std::unique_ptr<WritableFile>> OpenStream(const std::string& path) override {
    UniqueFd fd(path == "-" ? ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3) : ::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd.valid()) return Status::FromErrno(errno, "open " + (path == "-" ? std::string("standard output") : path));
    return std::unique_ptr<WritableFile>(
        new PosixWritableFile(std::move(fd), path == "-" ? "standard output" : path, /*stream=*/true));
  }

  Status SyncDir(const std::string& dir) override {
    UniqueFd fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd.valid()) return Status::FromErrno(errno, "open directory " + dir);
    const int rc = ::fsync(fd.get());
    const int e = errno;
    if (rc != 0) return Status::FromErrno(e, "fsync directory " + dir);
    return Status::Ok();
  }
};

}  // namespace

Status WritableFile::Skip(uint64_t len) {
  static const uint8_t kZeros[64 * 1024] = {};
  while (len > 0) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(len, sizeof kZeros));
    VMSNAP_RETURN_IF_ERROR(Append(kZeros, n));
    len -= n;
  }
  return Status::Ok();
}

Result<std::unique_ptr<WritableFile>> Env::OpenStream(const std::string& path) {
  return Status::Unsupported("cannot write " + path + " as a stream here");
}

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv;  // never freed: used from static destructors too
  return env;
}

}  // namespace vmsnap
