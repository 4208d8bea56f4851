// SPDX-License-Identifier: MIT
// Fault injection and "user memory" checks shared by the kernel models: a test
// arms a fault for the Nth next call of one operation, and can restrict which
// user addresses the model may copy to or from (for EFAULT on bad buffers).
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace vmsnap::kvm::model {

// One armed fault: fail with -err, or (err == 0) cap the transfer at
// short_len bytes (for read/write on an fd).
struct Fault {
  int err = 0;
  size_t short_len = 0;
};

class FaultPlan {
 public:
  // Arms `fault` for the call of `op` that comes after `skip` further calls.
  // `op` is the ioctl's name, or "read"/"write" for the HTAB fd.
  void Arm(const std::string& op, Fault fault, unsigned skip = 0) {
    armed_[op].push_back({skip, fault});
  }
  void ArmErrno(const std::string& op, int err, unsigned skip = 0) { Arm(op, Fault{err, 0}, skip); }
  void ArmShort(const std::string& op, size_t len, unsigned skip = 0) { Arm(op, Fault{0, len}, skip); }
  void Clear() { armed_.clear(); }

  // Called by the model at the start of each call of `op`: the fault that
  // fires now, if any.
  bool Take(const std::string& op, Fault* out) {
    auto it = armed_.find(op);
    if (it == armed_.end()) return false;
    bool fired = false;
    for (auto e = it->second.begin(); e != it->second.end();) {
      if (e->first == 0 && !fired) {
        *out = e->second;
        fired = true;
        e = it->second.erase(e);
      } else {
        if (e->first > 0) --e->first;
        ++e;
      }
    }
    return fired;
  }

 private:
  std::map<std::string, std::deque<std::pair<unsigned, Fault>>> armed_;
};

// Which user-space addresses the model treats as accessible. By default every
// non-null address is (the caller's buffers are real memory of this process);
// a test may restrict access to listed ranges to provoke EFAULT on a buffer
// that is too small.
class UserMemory {
 public:
  void Restrict(const void* addr, size_t len) {
    ranges_.push_back({reinterpret_cast<uintptr_t>(addr), len});
  }
  void Unrestrict() { ranges_.clear(); }
  bool Ok(uint64_t addr, size_t len) const {
    if (addr == 0) return false;
    if (ranges_.empty() || len == 0) return true;
    for (const auto& [start, size] : ranges_) {
      if (addr >= start && addr - start <= size && len <= size - (addr - start)) return true;
    }
    return false;
  }

 private:
  std::vector<std::pair<uintptr_t, size_t>> ranges_;
};

}  // namespace vmsnap::kvm::model
