// SPDX-License-Identifier: MIT
// A minimal VM for the dirty-tracking tests: one memory slot at guest-physical
// 0, one vCPU in 32-bit flat protected mode running page_writer_guest.S, and
// a run loop that hands doorbells and ring-full exits to the test.
#pragma once

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "capture/dirty/tracker.h"
#include "kvm/dirty/dirty_log.h"
#include "kvm/kvm.h"
#include "kvm/x86_64/x86.h"

extern "C" const uint8_t vmsnap_dirty_guest_start[];
extern "C" const uint8_t vmsnap_dirty_guest_end[];

namespace vmsnap::testing {

inline constexpr uint32_t kBell = 0xFFFFFFFF;
inline constexpr uint32_t kEnd = 0xFFFFFFFE;
inline constexpr uint32_t kRestart = 0xFFFFFFFD;
inline constexpr uint64_t kCodeGpa = 0x1000;
inline constexpr uint64_t kTableGpa = 0x2000;
// Pages the table may name start here (after the code and the table).
inline constexpr uint64_t kFirstDataPage = 0x100;

class MiniVm {
 public:
  // mode: which tracker (kOff: none). ring_bytes: 0 = default, else the ring
  // size to try; if KVM refuses it as too small, the next power of two.
  static Result<std::unique_ptr<MiniVm>> Create(uint64_t mem_bytes, capture::dirty::Mode mode,
                                                uint32_t ring_bytes = 0) {
    auto vm = std::unique_ptr<MiniVm>(new MiniVm());
    VMSNAP_ASSIGN_OR_RETURN(vm->system_, kvm::System::Open());
    VMSNAP_ASSIGN_OR_RETURN(vm->vm_, vm->system_->CreateVm());
    vm->ops_ = std::make_unique<kvm::dirty::VmDirtyLog>(vm->vm_->fd());
    if (mode == capture::dirty::Mode::kRing) {
      uint32_t bytes = ring_bytes;
      for (;;) {
        auto r = capture::dirty::EnableRing(*vm->ops_, bytes);
        if (r.ok()) { bytes = *r; break; }
        if (bytes == 0 || bytes >= (1u << 20)) return r.status();
        bytes *= 2;
      }
      vm->ring_bytes_ = bytes;
    }
    void* p = ::mmap(nullptr, mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return Status::Io("mmap of guest memory failed");
    vm->mem_ = static_cast<uint8_t*>(p);
    vm->mem_size_ = mem_bytes;
    std::memcpy(vm->mem_ + kCodeGpa, vmsnap_dirty_guest_start, vmsnap_dirty_guest_end - vmsnap_dirty_guest_start);
    kvm::GuestRegion region;
    region.slot = 0;
    region.gpa = 0;
    region.size = mem_bytes;
    region.host = vm->mem_;
    region.name = "ram";
    // The slot starts without logging: the tracker's Start switches it on.
    kvm::MemorySlot slot{0, 0, 0, mem_bytes, reinterpret_cast<uint64_t>(vm->mem_)};
    VMSNAP_RETURN_IF_ERROR(vm->vm_->SetUserMemoryRegion(slot));
    vm->region_ = region;
    capture::dirty::TrackerOptions topts;
    topts.ring_bytes = vm->ring_bytes_;
    if (mode == capture::dirty::Mode::kRing) {
      VMSNAP_ASSIGN_OR_RETURN(vm->tracker_,
                              capture::dirty::CreateRingTracker(*vm->ops_, {&vm->region_, 1}, topts));
    } else if (mode == capture::dirty::Mode::kBitmap) {
      VMSNAP_ASSIGN_OR_RETURN(vm->tracker_,
                              capture::dirty::CreateBitmapTracker(*vm->ops_, {&vm->region_, 1}, topts));
    }
    VMSNAP_ASSIGN_OR_RETURN(vm->vcpu_, vm->vm_->CreateVcpu(0));
    if (vm->tracker_) VMSNAP_RETURN_IF_ERROR(vm->tracker_->AttachVcpu(vm->vcpu_->fd(), 0));
    kvm::x86::RealVcpuOps vops(vm->vcpu_.get());
    VMSNAP_ASSIGN_OR_RETURN(kvm_sregs s, vops.GetSregs());
    kvm_segment code{};
    code.base = 0;
    code.limit = 0xffffffff;
    code.selector = 0x8;
    code.type = 11;
    code.present = 1;
    code.s = 1;
    code.db = 1;
    code.g = 1;
    kvm_segment data = code;
    data.selector = 0x10;
    data.type = 3;
    s.cs = code;
    s.ds = s.es = s.fs = s.gs = s.ss = data;
    s.cr0 |= 1;  // PE, paging off
    VMSNAP_RETURN_IF_ERROR(vops.SetSregs(s));
    kvm_regs r{};
    r.rip = kCodeGpa;
    r.rflags = 2;
    VMSNAP_RETURN_IF_ERROR(vops.SetRegs(r));
    return vm;
  }

  ~MiniVm() {
    tracker_.reset();
    vcpu_.reset();
    if (mem_) ::munmap(mem_, mem_size_);
  }

  // Writes the guest's command table.
  void SetTable(const std::vector<uint32_t>& words) {
    std::memcpy(mem_ + kTableGpa, words.data(), words.size() * 4);
  }

  // Runs until the guest exits; `on_bell` runs at each doorbell with the vCPU
  // out of KVM_RUN. Returns the number of doorbells.
  Result<int> Run(const std::function<Status(int)>& on_bell) {
    int bells = 0;
    for (;;) {
      VMSNAP_ASSIGN_OR_RETURN(auto rr, vcpu_->Run());
      if (rr == kvm::Vcpu::RunResult::kInterrupted) continue;
      kvm_run* run = vcpu_->run();
      switch (run->exit_reason) {
        case KVM_EXIT_IO:
          if (run->io.port == 0xF5) {
            ++bells;
            if (on_bell) VMSNAP_RETURN_IF_ERROR(on_bell(bells));
            break;
          }
          if (run->io.port == 0xF4) return bells;
          return Status::Guest("unexpected port " + std::to_string(run->io.port));
        case KVM_EXIT_DIRTY_RING_FULL:
          VMSNAP_RETURN_IF_ERROR(tracker_->HandleRingFull(0));
          break;
        default:
          return Status::Guest("unexpected exit " + std::to_string(run->exit_reason));
      }
    }
  }

  // Like Run, but when KVM_RUN is interrupted (Kick) asks `on_kick` whether
  // to go on. Returns -1 when stopped that way, else the number of doorbells.
  Result<int> RunKickable(const std::function<bool()>& on_kick) {
    runner_.store(::pthread_self());
    for (;;) {
      VMSNAP_ASSIGN_OR_RETURN(auto rr, vcpu_->Run());
      if (rr == kvm::Vcpu::RunResult::kInterrupted) {
        std::atomic_ref<uint8_t>(vcpu_->run()->immediate_exit).store(0);
        if (!on_kick()) return -1;
        continue;
      }
      kvm_run* run = vcpu_->run();
      if (run->exit_reason == KVM_EXIT_IO && run->io.port == 0xF4) return 0;
      if (run->exit_reason == KVM_EXIT_DIRTY_RING_FULL) {
        VMSNAP_RETURN_IF_ERROR(tracker_->HandleRingFull(0));
        continue;
      }
      if (run->exit_reason != KVM_EXIT_IO) return Status::Guest("unexpected exit " + std::to_string(run->exit_reason));
    }
  }
  // From any thread: makes the vCPU leave KVM_RUN (immediate_exit covers a
  // thread about to enter it, the signal one inside it).
  void Kick() {
    static const bool installed = [] {
      struct sigaction sa {};
      sa.sa_handler = [](int) {};
      sigemptyset(&sa.sa_mask);
      ::sigaction(SIGUSR2, &sa, nullptr);
      return true;
    }();
    (void)installed;
    // The kvm_run area is shared with KVM and with this thread's runner.
    std::atomic_ref<uint8_t>(vcpu_->run()->immediate_exit).store(1);
    ::pthread_kill(runner_.load(), SIGUSR2);
  }

  capture::dirty::DirtyTracker* tracker() { return tracker_.get(); }
  uint8_t* mem() { return mem_; }
  uint64_t mem_size() const { return mem_size_; }
  uint32_t ring_bytes() const { return ring_bytes_; }
  const kvm::GuestRegion& region() const { return region_; }

 private:
  MiniVm() = default;
  std::unique_ptr<kvm::System> system_;
  std::unique_ptr<kvm::Vm> vm_;
  std::unique_ptr<kvm::dirty::VmDirtyLog> ops_;
  std::unique_ptr<kvm::Vcpu> vcpu_;
  std::unique_ptr<capture::dirty::DirtyTracker> tracker_;
  kvm::GuestRegion region_;
  uint8_t* mem_ = nullptr;
  uint64_t mem_size_ = 0;
  uint32_t ring_bytes_ = 0;
  std::atomic<pthread_t> runner_{};
};

// True when /dev/kvm can be opened.
inline bool HaveKvm() { return kvm::System::Open().ok(); }

}  // namespace vmsnap::testing
