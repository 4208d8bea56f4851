// SPDX-License-Identifier: MIT
// The generic vCPU loop, one thread per vCPU: KVM_RUN, then each exit goes
// to the port bus (the devices) or ends the VM; and the pause/resume that
// parks every vCPU at a consistent point for a snapshot.
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "base/hex.h"
#include "lib/cxx.h"
#include "vmm/vmm.h"

namespace vmsnap::vmm {
namespace {

int64_t MonotonicNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Kicks a vCPU thread out of KVM_RUN: the handler does nothing, the ioctl
// returns EINTR. Installed without SA_RESTART.
const int kKickSignal = SIGUSR1;

void InstallKickHandler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ::sigaction(kKickSignal, &sa, nullptr);
  });
}

}  // namespace

void Vmm::StartVcpus() {
  InstallKickHandler();
  // Threads start under the lock, so a kick never sees a half-built list.
  std::lock_guard<std::mutex> lk(mu_);
  for (size_t i = 0; i < vcpus_.size(); ++i) threads_.emplace_back(&Vmm::VcpuLoop, this, i);
}

void Vmm::JoinVcpus() {
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Vmm::Notify() {
  uint64_t one = 1;
  ssize_t n = ::write(event_fd_.get(), &one, sizeof one);
  (void)n;
}

void Vmm::RequestPause() {
  std::lock_guard<std::mutex> lk(mu_);
  ++pause_depth_;
  // immediate_exit covers a thread about to enter KVM_RUN; the signal one
  // already inside it.
  for (auto& v : vcpus_) v->run()->immediate_exit = 1;
  for (auto& t : threads_) ::pthread_kill(t.native_handle(), kKickSignal);
}

void Vmm::WaitPaused() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [this] { return parked_ == threads_.size() || stop_; });
}

void Vmm::Resume() {
  std::lock_guard<std::mutex> lk(mu_);
  if (pause_depth_ > 0) --pause_depth_;
  if (pause_depth_ == 0) cv_.notify_all();
}

void Vmm::Stop(std::optional<int> exit_status, Status error) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!stop_) {
      stop_ = true;
      exit_status_ = exit_status;
      error_ = std::move(error);
    }
    for (auto& v : vcpus_) v->run()->immediate_exit = 1;
    for (auto& t : threads_) ::pthread_kill(t.native_handle(), kKickSignal);
    cv_.notify_all();
  }
  Notify();
}

Status Vmm::ParkVcpu(size_t i) {
  kvm::Vcpu& v = *vcpus_[i];
  // After an `in` exit the value user space put in the run area reaches RAX
  // only when KVM_RUN is entered again; with immediate_exit
  // set, KVM completes the instruction and returns EINTR at once, so the
  // state captured next is consistent.
  v.run()->immediate_exit = 1;
  for (int tries = 0; tries < 64; ++tries) {
    VMSNAP_ASSIGN_OR_RETURN(kvm::Vcpu::RunResult r, v.Run());
    if (r == kvm::Vcpu::RunResult::kInterrupted) return Status::Ok();
    // Completing a string I/O instruction can exit again; serve it.
    if (!HandleExit(i)) return Status::Ok();
  }
  return Status::Kvm("KVM_RUN" + v.where() + ": I/O did not complete while pausing");
}

bool Vmm::HandleExit(size_t i) {
  kvm::Vcpu& v = *vcpus_[i];
  kvm_run* run = v.run();
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      PortIo io;
      io.port = run->io.port;
      io.out = run->io.direction == KVM_EXIT_IO_OUT;
      io.data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      io.size = run->io.size;
      io.count = run->io.count;
      return ports_.Dispatch(io);
    }
    case KVM_EXIT_MMIO:
      if (!run->mmio.is_write) std::memset(run->mmio.data, 0xff, sizeof run->mmio.data);
      return true;
    case KVM_EXIT_HLT:
    case KVM_EXIT_INTR:
      return true;
    case KVM_EXIT_DIRTY_RING_FULL:
      // Harvest and reset the rings, then re-enter (docs/checkpoint-cycles.md).
      if (dirty_) {
        if (int rc = vmsnap_vm_dirty_ring_full(api_, static_cast<uint32_t>(i))) {
          Stop(std::nullopt, capi::StatusOf(rc));
          return false;
        }
      }
      return true;
    case KVM_EXIT_SHUTDOWN:
      Stop(std::nullopt, Status::Guest("guest shut down (triple fault)" + v.where()));
      return false;
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string rip;
      auto regs = vcpu_ops_[i]->GetRegs();
      if (regs.ok()) rip = " at RIP " + Hex(regs->rip);
      Stop(std::nullopt, Status::Kvm("KVM_RUN" + v.where() + ": KVM internal error, suberror " +
                                     std::to_string(run->internal.suberror) +
                                     (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
                                          ? " (instruction emulation failed" + rip + ")"
                                          : rip)));
      return false;
    }
    case KVM_EXIT_FAIL_ENTRY:
      Stop(std::nullopt, Status::Kvm("KVM_RUN" + v.where() + ": VM entry failed, hardware reason " +
                                     Hex(run->fail_entry.hardware_entry_failure_reason)));
      return false;
    case KVM_EXIT_SYSTEM_EVENT:
      Stop(std::nullopt, Status::Guest("guest requested system event " +
                                       std::to_string(run->system_event.type) + v.where()));
      return false;
    default:
      Stop(std::nullopt, Status::Kvm("KVM_RUN" + v.where() + ": unhandled exit reason " +
                                     std::to_string(run->exit_reason)));
      return false;
  }
}

void Vmm::VcpuLoop(size_t i) {
  kvm::Vcpu& v = *vcpus_[i];
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      if (stop_) break;
      if (pause_depth_ > 0) {
        lk.unlock();
        Status s = ParkVcpu(i);
        lk.lock();
        if (!s.ok()) {
          lk.unlock();
          Stop(std::nullopt, s);
          break;
        }
        ++parked_;
        cv_.notify_all();
        cv_.wait(lk, [this] { return pause_depth_ == 0 || stop_; });
        --parked_;
        if (stop_) break;
      }
      v.run()->immediate_exit = 0;
    }
    if (i == 0 && first_entry_ns_.load(std::memory_order_relaxed) == 0) first_entry_ns_.store(MonotonicNs());
    auto r = v.Run();
    if (!r.ok()) {
      Stop(std::nullopt, r.status());
      break;
    }
    if (*r == kvm::Vcpu::RunResult::kInterrupted) continue;
    if (i == 0 && first_exit_ns_.load(std::memory_order_relaxed) == 0) first_exit_ns_.store(MonotonicNs());
    if (!HandleExit(i)) break;
  }
}

}  // namespace vmsnap::vmm
