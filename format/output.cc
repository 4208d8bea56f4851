// SPDX-License-Identifier: MIT
// OutputFile: temporary file, fsync, rename; special files written through or
// refused; stale temporaries of killed writers removed.
#include "format/output.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <random>

#include "base/fd.h"

namespace vmsnap {
namespace {

constexpr char kTmpInfix[] = ".tmp-";
constexpr size_t kTmpSuffixLen = 8;  // hex digits after the infix

// Temporary files open in this process, for RemoveTemporaryOutputs() in a
// signal handler: fixed storage, lock-free, no allocation. Initialised at
// compile time (zero, in .bss): a constructor run at start-up would write
// all 32 slots, 33 pages that every run of `vmsnap` faulted in before main.
struct TmpSlot {
  std::atomic<int> state{0};  // 0 free, 1 being filled, 2 holds a path
  char path[PATH_MAX]{};
};
constexpr int kTmpSlots = 32;
constinit TmpSlot g_tmp_slots[kTmpSlots];

int RegisterTmp(const std::string& path) {
  if (path.size() >= PATH_MAX) return -1;
  for (int i = 0; i < kTmpSlots; ++i) {
    int expected = 0;
    if (g_tmp_slots[i].state.compare_exchange_strong(expected, 1)) {
      std::memcpy(g_tmp_slots[i].path, path.c_str(), path.size() + 1);
      g_tmp_slots[i].state.store(2);
      return i;
    }
  }
  return -1;  // more outputs at once than slots: that one is left to the next writer's clean-up
}

void UnregisterTmp(int slot) {
  if (slot >= 0) g_tmp_slots[slot].state.store(0);
}

std::string SplitDir(const std::string& path, std::string* base) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    *base = path;
    return ".";
  }
  *base = path.substr(slash + 1);
  return slash == 0 ? "/" : path.substr(0, slash);
}

const char* KindOf(mode_t m) {
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "not a regular file";
}

bool IsHex(const char* s, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

void RemoveTemporaryOutputs() {
  for (TmpSlot& s : g_tmp_slots) {
    if (s.state.load() == 2) ::unlink(s.path);
  }
}

void RemoveStaleTemporaries(const std::string& dest) {
  std::string base;
  const std::string dir = SplitDir(dest, &base);
  const std::string prefix = "." + base + kTmpInfix;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  const int dfd = ::dirfd(d);
  while (struct dirent* e = ::readdir(d)) {
    const size_t n = std::strlen(e->d_name);
    if (n != prefix.size() + kTmpSuffixLen || std::strncmp(e->d_name, prefix.c_str(), prefix.size()) != 0 ||
        !IsHex(e->d_name + prefix.size(), kTmpSuffixLen)) {
      continue;
    }
    // A live writer holds its temporary's lock: only an orphan's can be taken.
    UniqueFd fd(::openat(dfd, e->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!fd.valid()) continue;
    struct stat st;
    if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode) && ::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) {
      ::unlinkat(dfd, e->d_name, 0);
    }
  }
  ::closedir(d);
}

Result<std::unique_ptr<OutputFile>> OutputFile::Create(const std::string& path, const OutputOptions& o) {
  std::unique_ptr<OutputFile> out(new OutputFile);
  out->env_ = o.env ? o.env : Env::Default();
  out->path_ = path;
  if (path.empty() || path.back() == '/') {
    return Status::InvalidArgument(o.what + " path '" + path + "' names no file");
  }
  if (path == "-") {
    if (!o.stream_ok) {
      return Status::InvalidArgument("'-' (standard output) cannot take a " + o.what +
                                     ": it is written out of order; name a file");
    }
    VMSNAP_ASSIGN_OR_RETURN(out->file_, out->env_->OpenStream("-"));
    out->streaming_ = true;
    return out;
  }

  struct stat lst, st;
  bool exists = false;
  if (::lstat(path.c_str(), &lst) == 0) {
    exists = true;
    if (::stat(path.c_str(), &st) != 0) {
      return Status::InvalidArgument(path + " is a symbolic link to nothing (" + std::strerror(errno) +
                                     "): not replaced");
    }
  } else if (errno != ENOENT) {
    return Status::FromErrno(errno, "stat " + path);
  }
  out->dest_ = path;
  if (exists) {
    for (const std::string& in : o.inputs) {
      struct stat ist;
      if (::stat(in.c_str(), &ist) == 0 && ist.st_dev == st.st_dev && ist.st_ino == st.st_ino) {
        return Status::InvalidArgument(path + " is " + (in == path ? "the input" : "the input " + in) +
                                       ", which this command reads: not overwritten");
      }
    }
    if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
      if (!o.stream_ok) {
        return Status::InvalidArgument(path + " is " + KindOf(st.st_mode) + ", not a regular file, and a " +
                                       o.what + " cannot be streamed: not replaced");
      }
      auto f = out->env_->OpenStream(path);
      if (!f.ok()) return out->Named(f.status());
      out->file_ = std::move(f).value();
      out->streaming_ = true;
      return out;
    }
    if (!S_ISREG(st.st_mode)) {
      return Status::InvalidArgument(path + " is " + KindOf(st.st_mode) + ", not a regular file: not replaced");
    }
    if (S_ISLNK(lst.st_mode)) {
      // Write through the link: replace its target, keep the link.
      char* real = ::realpath(path.c_str(), nullptr);
      if (real == nullptr) return Status::FromErrno(errno, "resolve " + path);
      out->dest_ = real;
      std::free(real);
    }
  }

  std::string base;
  out->dir_ = SplitDir(out->dest_, &base);
  RemoveStaleTemporaries(out->dest_);
  const std::string stem =
      (out->dir_ == "." && out->dest_.find('/') == std::string::npos ? std::string() : out->dir_ + "/") + "." +
      base + kTmpInfix;
  std::random_device rd;
  Result<std::unique_ptr<WritableFile>> file = Status::Internal("unreached");
  // O_EXCL makes the name ours; a collision just takes another name.
  for (int attempt = 0; attempt < 8; ++attempt) {
    char suffix[kTmpSuffixLen + 1];
    std::snprintf(suffix, sizeof suffix, "%08x", unsigned(rd()));
    out->tmp_ = stem + suffix;
    // Registered before it exists: a signal arriving between the creation and
    // the registration would otherwise leave the temporary behind.
    out->registry_slot_ = RegisterTmp(out->tmp_);
    file = out->env_->NewWritableFile(out->tmp_, o.mode);
    if (file.ok()) break;
    UnregisterTmp(out->registry_slot_);  // not ours (taken, or never made)
    out->registry_slot_ = -1;
    if (file.status().message().find("File exists") == std::string::npos) break;
  }
  if (!file.ok()) {
    Status s = out->Named(file.status());
    out->tmp_.clear();
    return s;  // "create PATH: <reason>"
  }
  out->file_ = std::move(file).value();
  return out;
}

OutputFile::~OutputFile() {
  if (committed_ || streaming_) return;
  file_.reset();
  if (!tmp_.empty()) (void)env_->Remove(tmp_);
  UnregisterTmp(registry_slot_);
}

Status OutputFile::Named(const Status& s) const {
  if (s.ok()) return s;
  std::string m = s.message();
  if (!tmp_.empty()) {
    for (size_t at = m.find(tmp_); at != std::string::npos; at = m.find(tmp_, at + path_.size())) {
      m.replace(at, tmp_.size(), path_);
    }
  }
  if (m.find(path_) == std::string::npos) m = path_ + ": " + m;
  return Status(s.code(), std::move(m));
}

Status OutputFile::Append(const void* data, size_t len) {
  if (committed_) return Status::Internal(path_ + ": write after commit");
  Status s = file_->Append(data, len);
  if (!s.ok()) return Named(s);
  offset_ += len;
  return Status::Ok();
}

Status OutputFile::SkipTo(uint64_t offset) {
  if (offset < offset_) {
    return Status::Internal(path_ + ": write at offset " + std::to_string(offset) + " after offset " +
                            std::to_string(offset_));
  }
  Status s = file_->Skip(offset - offset_);
  if (!s.ok()) return Named(s);
  offset_ = offset;
  return Status::Ok();
}

Status OutputFile::Commit() {
  if (committed_) return Status::Ok();
  VMSNAP_RETURN_IF_ERROR(Named(file_->Sync()));
  VMSNAP_RETURN_IF_ERROR(Named(file_->Close()));
  if (streaming_) {
    committed_ = true;
    return Status::Ok();
  }
  VMSNAP_RETURN_IF_ERROR(Named(env_->Rename(tmp_, dest_)));
  committed_ = true;  // the file is in place; a failing directory sync does not undo that
  UnregisterTmp(registry_slot_);
  return env_->SyncDir(dir_).Context(path_ + " written but not durable");
}

}  // namespace vmsnap
