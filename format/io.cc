// SPDX-License-Identifier: MIT
// Env::Default: the POSIX file system behind the format library's I/O seam.
#include "format/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <random>

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

  Status WriteAt(uint64_t offset, const void* data, size_t len) override {
    const char* p = static_cast<const char*>(data);
    while (len > 0) {
      ssize_t n = ::pwrite(fd_, p, std::min<size_t>(len, size_t{1} << 30), static_cast<off_t>(offset));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, "write " + path_ + " at offset " + std::to_string(offset));
      }
      if (n == 0) return Status::Io("write " + path_ + ": wrote 0 bytes");
      p += n;
      offset += static_cast<uint64_t>(n);
      len -= static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  Status Truncate(uint64_t size) override {
    if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return Status::FromErrno(errno, "set size of " + path_);
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

Result<std::unique_ptr<AtomicFile>> AtomicFile::Create(Env* env, const std::string& path) {
  const size_t slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  std::random_device rd;
  std::string tmp;
  Result<std::unique_ptr<WritableFile>> file = Status::Internal("unreached");
  // O_EXCL makes the name ours; a collision with a leftover just takes another name.
  for (int attempt = 0; attempt < 8; ++attempt) {
    char suffix[20];
    std::snprintf(suffix, sizeof suffix, "%08x", unsigned(rd()));
    tmp = (slash == std::string::npos ? std::string() : dir + "/") + "." + base + ".tmp-" + suffix;
    file = env->NewWritableFile(tmp, 0600);
    if (file.ok() || file.status().message().find("File exists") == std::string::npos) break;
  }
  if (!file.ok()) return file.status();
  return std::unique_ptr<AtomicFile>(new AtomicFile(env, path, dir, tmp, std::move(file).value()));
}

AtomicFile::~AtomicFile() {
  if (!committed_) Abandon();
}

void AtomicFile::Abandon() {
  if (!file_) return;
  file_.reset();
  (void)env_->Remove(tmp_);
}

Status AtomicFile::Commit() {
  if (!file_) return Status::Internal("commit of an abandoned output " + path_);
  VMSNAP_RETURN_IF_ERROR(file_->Sync());
  VMSNAP_RETURN_IF_ERROR(file_->Close());
  VMSNAP_RETURN_IF_ERROR(env_->Rename(tmp_, path_));
  committed_ = true;
  return env_->SyncDir(dir_);
}

}  // namespace vmsnap
