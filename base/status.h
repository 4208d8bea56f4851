// SPDX-License-Identifier: MIT
// Errors as values: Status (a kind and a message) and Result<T>, used by every layer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace vmsnap {

enum class Code : uint8_t {
  kOk = 0,
  kInvalidArgument,  // the caller asked for something malformed or out of range
  kNotFound,         // a file, a parent snapshot, an MSR the host lacks
  kIo,               // read/write/fsync/rename failed
  kNoSpace,          // ENOSPC / EDQUOT
  kCorruption,       // a snapshot failed a check (checksum, bounds, magic)
  kUnsupported,      // newer major version, unknown arch, missing host feature
  kWrongArch,        // the snapshot is for another architecture
  kKvm,              // an ioctl failed
  kGuest,            // the guest did something the VMM cannot handle
  kInternal,
};

std::string_view CodeName(Code c);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string m) { return Status(Code::kInvalidArgument, std::move(m)); }
  static Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
  static Status Io(std::string m) { return Status(Code::kIo, std::move(m)); }
  static Status NoSpace(std::string m) { return Status(Code::kNoSpace, std::move(m)); }
  static Status Corruption(std::string m) { return Status(Code::kCorruption, std::move(m)); }
  static Status Unsupported(std::string m) { return Status(Code::kUnsupported, std::move(m)); }
  static Status WrongArch(std::string m) { return Status(Code::kWrongArch, std::move(m)); }
  static Status Kvm(std::string m) { return Status(Code::kKvm, std::move(m)); }
  static Status Guest(std::string m) { return Status(Code::kGuest, std::move(m)); }
  static Status Internal(std::string m) { return Status(Code::kInternal, std::move(m)); }
  // An I/O error from errno: kNoSpace for ENOSPC/EDQUOT, kNotFound for ENOENT, else kIo.
  static Status FromErrno(int err, std::string_view what);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "prefix: message", same code. For adding where an error happened.
  Status Context(std::string_view prefix) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}   // NOLINT: must not be ok
  bool ok() const { return v_.index() == 0; }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<1>(v_);
  }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace vmsnap

#define VMSNAP_CONCAT_INNER(a, b) a##b
#define VMSNAP_CONCAT(a, b) VMSNAP_CONCAT_INNER(a, b)

#define VMSNAP_RETURN_IF_ERROR(expr)             \
  do {                                           \
    ::vmsnap::Status vmsnap_status_ = (expr);    \
    if (!vmsnap_status_.ok()) return vmsnap_status_; \
  } while (0)

#define VMSNAP_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

#define VMSNAP_ASSIGN_OR_RETURN(lhs, expr) \
  VMSNAP_ASSIGN_OR_RETURN_IMPL(VMSNAP_CONCAT(vmsnap_result_, __LINE__), lhs, expr)
