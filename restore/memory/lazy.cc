// SPDX-License-Identifier: MIT
// Lazy load through userfaultfd: guest memory is registered in missing mode, a
// handler thread serves each fault by filling the faulting block with
// UFFDIO_COPY, and background threads fill the remaining blocks, those after
// recent faults first, then from low memory up.
//
// Exactly-once filling: each block has a state (empty, filling, filled,
// failed) changed by compare-and-swap, so the handler and the background never
// copy the same block twice. Only non-zero pages are copied; a fault on a zero
// page of a filled block is answered with UFFDIO_ZEROPAGE (EEXIST from a race
// with a copy, or from a second fault on the same page, is answered with a
// wake). When every block is filled the regions are unregistered and the zero
// pages nobody touched become ordinary anonymous memory.
//
// Failure: a block whose chunk fails its checksum is marked failed and never
// filled: a thread that faulted on it stays blocked, the error callback stops
// the VM, and the destructor poisons every page that was never filled so that
// no later access can read a zero page in its place.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>

#include "base/fd.h"
#include "format/layout.h"
#include "restore/memory/blocks.h"
#include "restore/memory/loader.h"

// UFFDIO_POISON (Linux 6.6) is newer than this system's kernel headers.
#ifndef UFFDIO_POISON
#define VMSNAP_UFFDIO_POISON_NR 0x08
struct uffdio_poison {
  struct uffdio_range range;
  __u64 mode;
  __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, VMSNAP_UFFDIO_POISON_NR, struct uffdio_poison)
#define UFFD_FEATURE_POISON (1 << 14)
#else
#define VMSNAP_UFFDIO_POISON_NR _UFFDIO_POISON
#endif

namespace vmsnap::memory {
namespace {

enum BlockState : uint8_t { kEmpty = 0, kFilling = 1, kFilled = 2, kFailed = 3 };

// The background fill waits this long after the start before it takes a
// block: a VM's first faults (the VMM's write of the generation ID, the
// guest's first instructions, its stack and page tables) come in the first
// few milliseconds, and each is served soonest by the fault handler alone.
constexpr auto kFirstFaultsWindow = std::chrono::milliseconds(10);
// The background threads' nice value (see BackgroundLoop).
constexpr int kBackgroundNice = 19;

// A userfaultfd with the API handshake done, from the syscall or, where the
// syscall is refused, from /dev/userfaultfd. Not UFFD_USER_MODE_ONLY: KVM's
// own accesses to guest memory are kernel-mode faults and must reach us too.
Result<UniqueFd> OpenUserfaultfd(uint64_t features) {
  UniqueFd fd(int(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  if (!fd.valid()) {
    const int e = errno;
    UniqueFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
    if (dev.valid()) fd.Reset(::ioctl(dev.get(), USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK));
    if (!fd.valid()) {
      return Status::Unsupported(
          std::string("userfaultfd is not available (") + std::strerror(e) +
          "): lazy memory needs root, CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1 or access "
          "to /dev/userfaultfd; use --memory eager");
    }
  }
  struct uffdio_api api = {};
  api.api = UFFD_API;
  api.features = features;
  if (::ioctl(fd.get(), UFFDIO_API, &api) != 0) return Status::FromErrno(errno, "userfaultfd UFFDIO_API");
  return fd;
}

}  // namespace

struct LazyPager::Impl {
  Impl(const SnapshotChain& c, const LazyOptions& o) : chain(c), opts(o), handler_reader(c, o.fetch_chunk) {}

  const SnapshotChain& chain;
  LazyOptions opts;
  internal::BlockGrid grid;
  uint32_t ps = 4096;
  UniqueFd uffd;
  UniqueFd stop_efd;
  bool can_poison = false;
  std::unique_ptr<std::atomic<uint8_t>[]> state;
  std::atomic<size_t> filled{0};
  std::atomic<size_t> sweep{0};
  std::atomic<bool> failed{false};
  std::atomic<bool> unregistered{false};

  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<size_t> hints;  // blocks after recent faults, most recent first
  bool stopping = false;
  bool done = false;
  bool error_claimed = false;
  Status error;

  std::atomic<uint64_t> n_faults{0}, n_fault_fills{0}, n_background_fills{0}, n_zero{0},
      n_bytes{0};

  internal::BlockReader handler_reader;  // used only by the handler thread
  std::thread handler;
  std::vector<std::thread> background;
  std::vector<pid_t> background_tids;  // under mu
  std::atomic<int> boosts{0};          // faults waiting on a background fill

  // A fault that waits for a block a background thread is filling waits
  // for a thread at the lowest priority, which a busy host may leave
  // without a CPU for long: the background threads run at the normal
  // priority while any fault waits on them. (Raising a priority needs
  // CAP_SYS_NICE or RLIMIT_NICE; without, this does nothing.)
  void Boost() {
    if (boosts.fetch_add(1) == 0) Reprioritize();
  }
  void Unboost() {
    if (boosts.fetch_sub(1) == 1) Reprioritize();
  }
  void Reprioritize() {
    std::lock_guard<std::mutex> lock(mu);
    const int nice = boosts.load() > 0 ? 0 : kBackgroundNice;
    for (pid_t t : background_tids) (void)::setpriority(PRIO_PROCESS, t, nice);
  }

  // The callback runs before Wait() and first_error() see the error, so a
  // caller woken by Wait() knows the VM has already been told to stop.
  void ReportError(const Status& s) {
    {
      std::lock_guard<std::mutex> lock(mu);
      // Once the owner tears the pager down (the VM ended, memory is going
      // away), failures of unfinished work are no longer the VM's errors.
      if (stopping || error_claimed) return;
      error_claimed = true;
    }
    failed = true;
    if (opts.on_error) opts.on_error(s);
    {
      std::lock_guard<std::mutex> lock(mu);
      error = s;
    }
    cv.notify_all();
  }

  // UFFDIO_COPY of [dst, dst+len) from src. Pages that already exist (EEXIST)
  // are skipped: someone else answered that page, with the same content.
  Status Copy(uint8_t* dst, const uint8_t* src, uint64_t len) {
    uint64_t off = 0;
    while (off < len) {
      struct uffdio_copy c = {};
      c.dst = reinterpret_cast<uintptr_t>(dst + off);
      c.src = reinterpret_cast<uintptr_t>(src + off);
      c.len = len - off;
      if (::ioctl(uffd.get(), UFFDIO_COPY, &c) == 0) {
        off = len;
        break;
      }
      const int e = errno;
      if (c.copy > 0) off += uint64_t(c.copy);
      if (e == EAGAIN) continue;
      if (e == EEXIST) {
        off += ps;
        continue;
      }
      return Status::FromErrno(e, "userfaultfd UFFDIO_COPY at host address " +
                                      Hex(reinterpret_cast<uintptr_t>(dst + off)));
    }
    return Status::Ok();
  }

  void Wake(uint8_t* page) {
    struct uffdio_range r = {reinterpret_cast<uintptr_t>(page), ps};
    (void)::ioctl(uffd.get(), UFFDIO_WAKE, &r);
  }

  // Answers a fault on a page of a filled block: every non-zero page of it is
  // mapped, so a missing page is a zero page.
  Status ZeroPage(uint8_t* page) {
    for (;;) {
      struct uffdio_zeropage z = {};
      z.range.start = reinterpret_cast<uintptr_t>(page);
      z.range.len = ps;
      if (::ioctl(uffd.get(), UFFDIO_ZEROPAGE, &z) == 0) {
        n_zero.fetch_add(1, std::memory_order_relaxed);
        return Status::Ok();
      }
      const int e = errno;
      if (e == EAGAIN) continue;
      if (e == EEXIST) {
        Wake(page);
        return Status::Ok();
      }
      if (unregistered.load()) {
        // A fault queued while the regions were being unregistered (per-VMA
        // locked faults can slip in after the kernel's own wake): wake it, it
        // retries as an ordinary fault on what is now plain anonymous memory.
        Wake(page);
        return Status::Ok();
      }
      return Status::FromErrno(e, "userfaultfd UFFDIO_ZEROPAGE at host address " +
                                      Hex(reinterpret_cast<uintptr_t>(page)));
    }
  }

  // Fills block i, which the caller has claimed (state kFilling).
  void FillClaimed(size_t i, internal::BlockReader& reader) {
    const internal::BlockGrid::Block& blk = grid.block(i);
    uint64_t bytes = 0;
    Status s = reader.Read(blk, [&](const internal::Run& run) {
      if (!run.src) return Status::Ok();  // zero pages: left missing until touched
      const uint64_t len = uint64_t(run.pages) * ps;
      bytes += len;
      return Copy(blk.host + uint64_t(run.first_page) * ps, run.src, len);
    });
    if (!s.ok()) {
      state[i].store(kFailed);
      state[i].notify_all();
      ReportError(s);
      return;
    }
    n_bytes.fetch_add(bytes, std::memory_order_relaxed);
    state[i].store(kFilled);
    state[i].notify_all();
    if (filled.fetch_add(1) + 1 == grid.count()) {
      { std::lock_guard<std::mutex> lock(mu); }
      cv.notify_all();
    }
  }

  bool Claim(size_t i) {
    uint8_t expected = kEmpty;
    return state[i].compare_exchange_strong(expected, kFilling);
  }

  void ServeFault(uint8_t* page) {
    n_faults.fetch_add(1, std::memory_order_relaxed);
    const long bi = grid.Find(page);
    if (bi < 0) {
      Wake(page);  // not ours: cannot happen with missing-mode registration of our regions only
      return;
    }
    const size_t i = size_t(bi);
    // Guests tend to walk memory upwards: the next blocks are likely next.
    {
      std::lock_guard<std::mutex> lock(mu);
      for (size_t k = 2; k >= 1; --k) {
        if (i + k < grid.count()) hints.push_front(i + k);
      }
      while (hints.size() > 64) hints.pop_back();
    }
    cv.notify_all();
    for (;;) {
      const uint8_t st = state[i].load();
      if (st == kEmpty) {
        if (Claim(i)) {
          n_fault_fills.fetch_add(1, std::memory_order_relaxed);
          FillClaimed(i, handler_reader);
        }
        continue;
      }
      if (st == kFilling) {
        Boost();
        state[i].wait(kFilling);
        Unboost();
        continue;
      }
      if (st == kFilled) {
        Status s = ZeroPage(page);
        if (!s.ok()) ReportError(s);
        return;
      }
      return;  // kFailed: never hand this thread a page
    }
  }

  void HandlerLoop() {
    struct uffd_msg msgs[16];
    for (;;) {
      struct pollfd fds[2] = {{uffd.get(), POLLIN, 0}, {stop_efd.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        ReportError(Status::FromErrno(errno, "poll on userfaultfd"));
        return;
      }
      if (fds[1].revents) return;
      const ssize_t n = ::read(uffd.get(), msgs, sizeof(msgs));
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        ReportError(Status::FromErrno(errno, "read from userfaultfd"));
        return;
      }
      for (size_t k = 0; k < size_t(n) / sizeof(msgs[0]); ++k) {
        if (msgs[k].event != UFFD_EVENT_PAGEFAULT) continue;
        const uint64_t addr = msgs[k].arg.pagefault.address & ~uint64_t(ps - 1);
        ServeFault(reinterpret_cast<uint8_t*>(addr));
      }
    }
  }

  void BackgroundLoop(bool finisher) {
    // The fill is work nobody waits for yet: on a busy host it must not take
    // the CPU from the thread restoring the VM, the vCPUs or the fault
    // handler (which serves what a vCPU waits for). On an idle core it runs
    // as before.
    const pid_t tid = pid_t(::syscall(SYS_gettid));
    {
      std::lock_guard<std::mutex> lock(mu);
      background_tids.push_back(tid);
      if (boosts.load() == 0) (void)::setpriority(PRIO_PROCESS, tid, kBackgroundNice);
    }
    internal::BlockReader reader(chain, opts.fetch_chunk);
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, kFirstFaultsWindow, [&] { return stopping; });
    }
    for (;;) {
      if (failed.load()) break;
      size_t i;
      {
        std::unique_lock<std::mutex> lock(mu);
        if (stopping) break;
        if (!hints.empty() && opts.background) {
          i = hints.front();
          hints.pop_front();
        } else {
          i = sweep.fetch_add(1);
          if (i >= grid.count()) break;
        }
      }
      if (state[i].load() == kEmpty && Claim(i)) {
        n_background_fills.fetch_add(1, std::memory_order_relaxed);
        FillClaimed(i, reader);
      }
    }
    if (!finisher) return;
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return stopping || failed.load() || filled.load() == grid.count(); });
    if (stopping || failed.load()) return;
    lock.unlock();
    // Every non-zero page is in place: hand the rest back to the kernel. The
    // unregister wakes anyone still waiting; they retry as ordinary faults.
    Status s;
    unregistered = true;
    for (const GuestRegion& r : grid.regions()) {
      struct uffdio_range range = {reinterpret_cast<uintptr_t>(r.host), r.size};
      if (::ioctl(uffd.get(), UFFDIO_UNREGISTER, &range) != 0 && s.ok()) {
        s = Status::FromErrno(errno, "userfaultfd UFFDIO_UNREGISTER of gpa " + Hex(r.gpa));
      }
    }
    if (!s.ok()) {
      ReportError(s);
      return;
    }
    lock.lock();
    done = true;
    lock.unlock();
    cv.notify_all();
  }

  // Makes every page of a block that was never filled fault with SIGBUS
  // (UFFDIO_POISON) or SIGSEGV (PROT_NONE) rather than read as zero once the
  // userfaultfd is closed.
  void FenceUnfilled() {
    for (size_t i = 0; i < grid.count(); ++i) {
      if (state[i].load() == kFilled) continue;
      const internal::BlockGrid::Block& blk = grid.block(i);
      const uint64_t len = uint64_t(blk.pages) * ps;
      bool ok = false;
      if (can_poison) {
        ok = true;
        uint64_t off = 0;
        while (off < len) {
          struct uffdio_poison p = {};
          p.range.start = reinterpret_cast<uintptr_t>(blk.host + off);
          p.range.len = len - off;
          if (::ioctl(uffd.get(), UFFDIO_POISON, &p) == 0) break;
          const int e = errno;
          if (p.updated > 0) off += uint64_t(p.updated);
          if (e == EAGAIN) continue;
          if (e == EEXIST) {
            off += ps;
            continue;
          }
          ok = false;
          break;
        }
      }
      if (!ok) (void)::mprotect(blk.host, len, PROT_NONE);
    }
  }
};

Status CheckUserfaultfd() {
  return OpenUserfaultfd(0).status();
}

LazyPager::LazyPager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<LazyPager>> LazyPager::Start(const SnapshotChain& chain,
                                                    std::span<const GuestRegion> regions,
                                                    LazyOptions options) {
  auto impl = std::make_unique<Impl>(chain, options);
  VMSNAP_RETURN_IF_ERROR(impl->grid.Init(chain, regions));
  impl->ps = impl->grid.page_size();
  // Ask for UFFDIO_POISON where the kernel has it; older kernels reject the
  // unknown feature, so retry without.
  auto fd = OpenUserfaultfd(UFFD_FEATURE_POISON);
  if (!fd.ok()) {
    if (fd.status().code() == Code::kUnsupported) return fd.status();
    fd = OpenUserfaultfd(0);
  } else {
    impl->can_poison = true;
  }
  if (!fd.ok()) return fd.status();
  impl->uffd = std::move(fd).value();
  for (const GuestRegion& r : impl->grid.regions()) {
    struct uffdio_register reg = {};
    reg.range.start = reinterpret_cast<uintptr_t>(r.host);
    reg.range.len = r.size;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (::ioctl(impl->uffd.get(), UFFDIO_REGISTER, &reg) != 0) {
      return Status::FromErrno(errno, "userfaultfd UFFDIO_REGISTER of guest memory at gpa " +
                                          Hex(r.gpa) + " (" + std::to_string(r.size) +
                                          " bytes; it must be private anonymous memory)");
    }
    const uint64_t need = (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_ZEROPAGE) | (1ull << _UFFDIO_WAKE);
    if ((reg.ioctls & need) != need) {
      return Status::Unsupported("userfaultfd cannot copy or zero pages into guest memory at gpa " +
                                 Hex(r.gpa));
    }
    if (!(reg.ioctls & (1ull << VMSNAP_UFFDIO_POISON_NR))) impl->can_poison = false;
  }
  impl->stop_efd.Reset(::eventfd(0, EFD_CLOEXEC));
  if (impl->stop_efd.get() < 0) return Status::FromErrno(errno, "eventfd");
  impl->state = std::make_unique<std::atomic<uint8_t>[]>(impl->grid.count());

  unsigned bg = impl->opts.background_threads;
  if (bg == 0) bg = std::max(1u, std::thread::hardware_concurrency() - 1);
  if (!impl->opts.background) {
    bg = 1;  // only the finisher, which fills nothing
    impl->sweep = impl->grid.count();
  }
  Impl* p = impl.get();
  std::unique_ptr<LazyPager> pager(new LazyPager(std::move(impl)));
  p->handler = std::thread([p] { p->HandlerLoop(); });
  for (unsigned t = 0; t < bg; ++t) {
    p->background.emplace_back([p, t] { p->BackgroundLoop(t == 0); });
  }
  return pager;
}

LazyPager::~LazyPager() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  for (auto& t : impl_->background) t.join();
  const uint64_t one = 1;
  // An eventfd write of 1 cannot fail short of a kernel bug; the handler polls it.
  (void)!::write(impl_->stop_efd.get(), &one, sizeof(one));
  impl_->handler.join();
  if (!impl_->done) impl_->FenceUnfilled();
}

Status LazyPager::Wait() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->done || !impl_->error.ok() || impl_->stopping; });
  return impl_->error;
}

bool LazyPager::done() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->done;
}

Status LazyPager::first_error() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->error;
}

LazyStats LazyPager::stats() const {
  LazyStats s;
  s.faults = impl_->n_faults.load();
  s.fault_fills = impl_->n_fault_fills.load();
  s.background_fills = impl_->n_background_fills.load();
  s.zero_page_faults = impl_->n_zero.load();
  s.bytes_filled = impl_->n_bytes.load();
  return s;
}

uint64_t LazyPager::total_bytes() const { return impl_->grid.total_bytes(); }

}  // namespace vmsnap::memory
