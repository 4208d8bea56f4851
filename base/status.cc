// SPDX-License-Identifier: MIT
// Status helpers: see status.h.
#include "base/status.h"

#include <cerrno>
#include <cstring>

namespace vmsnap {

std::string_view CodeName(Code c) {
  switch (c) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid argument";
    case Code::kNotFound: return "not found";
    case Code::kIo: return "I/O error";
    case Code::kNoSpace: return "no space";
    case Code::kCorruption: return "corrupt";
    case Code::kUnsupported: return "unsupported";
    case Code::kWrongArch: return "wrong architecture";
    case Code::kKvm: return "KVM error";
    case Code::kGuest: return "guest error";
    case Code::kInternal: return "internal error";
  }
  return "unknown";
}

Status Status::FromErrno(int err, std::string_view what) {
  std::string m(what);
  m += ": ";
  m += std::strerror(err);
  if (err == ENOSPC || err == EDQUOT) return Status(Code::kNoSpace, std::move(m));
  if (err == ENOENT) return Status(Code::kNotFound, std::move(m));
  return Status(Code::kIo, std::move(m));
}

Status Status::Context(std::string_view prefix) const {
  if (ok()) return *this;
  std::string m(prefix);
  m += ": ";
  m += message_;
  return Status(code_, std::move(m));
}

}  // namespace vmsnap
