// SPDX-License-Identifier: MIT
// Env::Default: the POSIX file system behind the format library's I/O seam.
#include "format/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace vmsnap {
namespace {

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(const void* data, size_t len) override {
    const char* p = static_cast<const char*>(data);
    while (len > 0) {
      ssize_t n = ::write(fd_, p, len);
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "write " + path_);
      }
      if (n == 0) return Status::Io("write " + path_ + ": wrote 0 bytes");
      p += n;
      len -= static_cast<size_t>(n);
      written_ += static_cast<uint64_t>(n);
    }
    // Start writeback of what is complete every kWritebackStep bytes, so
    // the disk works while later chunks are still being compressed and the
    // final fsync waits only for the tail. A hint: an error here is not
    // reported (Sync() reports the real outcome).
    if (written_ - kicked_ >= kWritebackStep) {
      (void)::sync_file_range(fd_, static_cast<off64_t>(kicked_), static_cast<off64_t>(written_ - kicked_),
                              SYNC_FILE_RANGE_WRITE);
      kicked_ = written_;
    }
    return Status::Ok();
  }

  Status Sync() override {
    if (::fsync(fd_) != 0) return Status::FromErrno(errno, "fsync " + path_);
    return Status::Ok();
  }

  Status Close() override {
    if (fd_ < 0) return Status::Ok();
    int fd = fd_;
    fd_ = -1;
    // close() can report a delayed write error (NFS); it must not be lost.
    if (::close(fd) != 0) return Status::FromErrno(errno, "close " + path_);
    return Status::Ok();
  }

 private:
  static constexpr uint64_t kWritebackStep = 8ull << 20;
  int fd_;
  std::string path_;
  uint64_t written_ = 0;  // bytes appended so far (the file is written in order)
  uint64_t kicked_ = 0;   // bytes whose writeback has been started
};

class PosixEnv final : public Env {
 public:
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path,
                                                        unsigned mode) override {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) return Status::FromErrno(errno, "create " + path);
    // The umask may have narrowed the mode; it must never widen it, but a
    // restrictive umask must not leave the owner unable to read its snapshot.
    if (::fchmod(fd, mode) != 0) {
      int e = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return Status::FromErrno(e, "chmod " + path);
    }
    return std::unique_ptr<WritableFile>(new PosixWritableFile(fd, path));
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

  Status SyncDir(const std::string& dir) override {
    int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Status::FromErrno(errno, "open directory " + dir);
    int rc = ::fsync(fd);
    int e = errno;
    ::close(fd);
    if (rc != 0) return Status::FromErrno(e, "fsync directory " + dir);
    return Status::Ok();
  }
};

}  // namespace

Env* Env::Default() {
  static PosixEnv* env = new PosixEnv;  // never freed: used from static destructors too
  return env;
}

}  // namespace vmsnap
