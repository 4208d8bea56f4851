// SPDX-License-Identifier: MIT
// Lazy load through userfaultfd: guest memory is registered in missing mode, a
// handler thread serves each fault, and background threads fill the remaining
// blocks, those the faults left half done first, then those after recent
// faults, then from low memory up.
//
// A first fault on a block whose pages all come from one chunk is served from
// the front of that chunk: the chunk's stored bytes are checked against their
// checksum, then only as much of it is decoded as the faulting page needs (a
// zstd block of at most 128 KiB at a time), and that page and the decoded
// pages just after it are copied in. The block is then parked with its
// decoder, to be taken further by the next fault on it or finished by the
// background (which decodes the rest and checks the decoded pages' checksum
// before copying them). Other blocks (pages from several layers' chunks) are
// decoded whole and checked before any page of them is copied.
//
// Exactly-once filling: each block has a state (empty, partial, filling,
// filled, failed) changed by compare-and-swap, and only the thread that moved
// it to filling works on it, so the handler and the background never copy the
// same page twice. Only non-zero pages are copied; a fault on a zero page is
// answered with UFFDIO_ZEROPAGE (EEXIST from a race with a copy, or from a
// second fault on the same page, is answered with a wake). When every block
// is filled the regions are unregistered and the zero pages nobody touched
// become ordinary anonymous memory.
//
// Failure: a block whose chunk fails its checksum is marked failed and never
// filled further: a thread that faulted on it stays blocked, the error
// callback stops the VM, and the destructor poisons every page that was never
// filled so that no later access can read a zero page in its place.
//
// A warm VM arms its pager before its snapshot is known (Arm: the regions
// registered, the threads started, the decoders' memory touched), so that a
// request only hands it the snapshot (Begin).
//
// The pages the VMM names as its own first accesses (LazyOptions::
// first_pages: the generation ID's) are served by the fault handler as soon
// as it has the snapshot, before it reads any fault, while the VMM restores
// the vCPUs; then, if asked (LazyOptions::start_pages), the pages the vCPUs
// resume on, found by walking the guest's page tables over pages it has just
// served itself, so that a chunk that fails ends the walk instead of leaving
// the handler waiting on its own fault.
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
#include "guest/start_pages.h"
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

// kPartial: some pages are in, the rest waits with its decoder parked.
enum BlockState : uint8_t { kEmpty = 0, kFilling = 1, kFilled = 2, kFailed = 3, kPartial = 4 };

// The background fill waits this long after the start before it takes a
// block: a VM's first faults (the VMM's write of the generation ID, the
// guest's first instructions, its stack and page tables) come in the first
// few milliseconds, and each is served soonest by the fault handler alone.
constexpr auto kFirstFaultsWindow = std::chrono::milliseconds(10);
// The background threads' nice value (see BackgroundLoop).
constexpr int kBackgroundNice = 19;
// Blocks served a page at a time that may wait, parked, at once; a first
// fault beyond them fills its whole block. Each holds a decoder and a
// chunk-sized buffer; the first few are made (and touched) when the pager is
// armed, the others when needed.
constexpr size_t kMaxPartials = 8;
constexpr size_t kSparePartials = 2;
constexpr auto kArmedPrepareDelay = std::chrono::milliseconds(20);
// A buffer for the chunks the writer makes by default (256 pages of 4 KiB);
// a larger chunk grows it.
constexpr uint64_t kDefaultChunkBytes = 1 << 20;
// Decoded pages copied in with the faulting page: those up to this many
// pages after it (a guest touching a page tends to touch the next ones; the
// rest wait for the next fault or the background).
constexpr uint32_t kPagesAhead = 16;

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

// A block served a page at a time: its one chunk, decoded from the front.
struct Partial {
  Partial() : stream(kDefaultChunkBytes) {}
  internal::ChunkStream stream;
  bool has_chunk = false;  // false: every page of the block is zero
  // The block's stored pages in order: (page within the block, index among
  // the chunk's stored pages), and which of them are in guest memory.
  std::vector<std::pair<uint32_t, uint32_t>> pages;
  std::vector<uint8_t> copied;
  size_t left = 0;              // stored pages not copied yet
  std::vector<int32_t> entry;   // per page of the block: its index in `pages`, or -1 (zero)
};

}  // namespace

struct LazyPager::Impl {
  explicit Impl(std::span<const GuestRegion> r) : armed(r.begin(), r.end()) {}

  std::vector<GuestRegion> armed;  // as given to Arm
  // Set once by Begin, read by the threads only after they see `begun`.
  const SnapshotChain* chain = nullptr;
  LazyOptions opts;
  internal::BlockGrid grid;
  uint32_t ps = 4096;
  UniqueFd uffd;
  UniqueFd stop_efd;
  bool can_poison = false;
  std::unique_ptr<std::atomic<uint8_t>[]> state;
  // The parked decoder of each block in state kPartial; read and written
  // only by the thread that holds the block in state kFilling.
  std::unique_ptr<Partial*[]> partial_of;
  std::atomic<size_t> filled{0};
  std::atomic<size_t> sweep{0};
  std::atomic<bool> failed{false};
  std::atomic<bool> unregistered{false};

  mutable std::mutex mu;
  std::condition_variable cv;
  bool begun = false;
  bool disarmed = false;  // armed, then unregistered without a snapshot
  bool held = false;      // LazyOptions::hold_fill, until Release
  bool fence = true;      // false: SkipFence
  std::chrono::steady_clock::time_point begun_at;
  std::deque<size_t> hints;   // blocks after recent faults, most recent first
  std::deque<size_t> parked;  // blocks parked partial, for the background to finish
  bool stopping = false;
  bool done = false;
  bool error_claimed = false;
  Status error;

  std::atomic<uint64_t> n_faults{0}, n_fault_fills{0}, n_background_fills{0}, n_zero{0},
      n_bytes{0}, n_partial{0}, n_first{0}, n_start{0};

  // Used only by the handler thread.
  std::unique_ptr<internal::BlockReader> handler_reader;
  std::vector<internal::PageRef> refs;
  std::thread handler;
  std::thread finisher;                // the first background thread; it starts the others
  std::vector<pid_t> background_tids;  // under mu
  std::atomic<bool> boosted{false};

  std::mutex partials_mu;
  std::vector<std::unique_ptr<Partial>> partials;  // every one made
  std::vector<Partial*> free_partials;

  // A fault that waits for a block a background thread is filling waits
  // for a thread at the lowest priority, which a busy host may leave
  // without a CPU for long: from the first such wait on, the background
  // threads run at the normal priority (once: a setpriority per thread per
  // wait would cost more than the wait). Raising a priority needs
  // CAP_SYS_NICE or RLIMIT_NICE; without, this does nothing.
  void Boost() {
    if (boosted.exchange(true)) return;
    std::lock_guard<std::mutex> lock(mu);
    for (pid_t t : background_tids) (void)::setpriority(PRIO_PROCESS, t, 0);
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

  // Answers a fault on a page no layer stores: a zero page.
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

  Partial* TakePartial() {
    std::lock_guard<std::mutex> lock(partials_mu);
    if (free_partials.empty()) {
      if (partials.size() >= kMaxPartials) return nullptr;
      partials.push_back(std::make_unique<Partial>());
      return partials.back().get();
    }
    Partial* p = free_partials.back();
    free_partials.pop_back();
    return p;
  }
  void GiveBack(Partial* p) {
    std::lock_guard<std::mutex> lock(partials_mu);
    free_partials.push_back(p);
  }
  // Made ahead, so that the first faults find their memory touched.
  void MakeSpares() {
    std::vector<std::unique_ptr<Partial>> made;
    for (size_t k = 0; k < kSparePartials; ++k) made.push_back(std::make_unique<Partial>());
    std::lock_guard<std::mutex> lock(partials_mu);
    for (auto& p : made) {
      free_partials.push_back(p.get());
      partials.push_back(std::move(p));
    }
  }

  // The end of the claimed block i: every non-zero page is in.
  void MarkFilled(size_t i, bool by_fault) {
    if (Partial* p = partial_of[i]) {
      partial_of[i] = nullptr;
      GiveBack(p);
    }
    (by_fault ? n_fault_fills : n_background_fills).fetch_add(1, std::memory_order_relaxed);
    state[i].store(kFilled);
    state[i].notify_all();
    if (filled.fetch_add(1) + 1 == grid.count()) {
      { std::lock_guard<std::mutex> lock(mu); }
      cv.notify_all();
    }
  }

  void MarkFailed(size_t i, const Status& s) {
    if (Partial* p = partial_of[i]) {
      partial_of[i] = nullptr;
      GiveBack(p);
    }
    state[i].store(kFailed);
    state[i].notify_all();
    ReportError(s);
  }

  // Fills block i, which the caller has claimed (state kFilling) while it
  // was empty, whole: every chunk it needs decoded and checked first.
  // `resolved`: where each of its pages comes from, if the caller knows.
  void FillClaimed(size_t i, internal::BlockReader& reader, bool by_fault,
                   const std::vector<internal::PageRef>* resolved = nullptr) {
    const internal::BlockGrid::Block& blk = grid.block(i);
    uint64_t bytes = 0;
    auto copy = [&](const internal::Run& run) {
      if (!run.src) return Status::Ok();  // zero pages: left missing until touched
      const uint64_t len = uint64_t(run.pages) * ps;
      bytes += len;
      return Copy(blk.host + uint64_t(run.first_page) * ps, run.src, len);
    };
    Status s = resolved ? reader.Read(blk, *resolved, copy) : reader.Read(blk, copy);
    if (!s.ok()) {
      MarkFailed(i, s);
      return;
    }
    n_bytes.fetch_add(bytes, std::memory_order_relaxed);
    MarkFilled(i, by_fault);
  }

  // Sets `p` up for block i (claimed), whose pages come from `refs`, when
  // its stored pages all come from one chunk; false (nothing read) when
  // they come from several.
  Result<bool> SetUpPartial(size_t i, Partial& p) {
    const internal::BlockGrid::Block& blk = grid.block(i);
    p.pages.clear();
    p.entry.assign(blk.pages, -1);
    int32_t layer = -1;
    uint32_t chunk = 0;
    for (uint32_t k = 0; k < blk.pages; ++k) {
      const internal::PageRef& r = refs[k];
      if (r.layer < 0) continue;
      if (layer < 0) {
        layer = r.layer;
        chunk = r.chunk;
      } else if (r.layer != layer || r.chunk != chunk) {
        return false;
      }
      p.entry[k] = int32_t(p.pages.size());
      p.pages.emplace_back(k, r.raw);
    }
    p.copied.assign(p.pages.size(), 0);
    p.left = p.pages.size();
    p.has_chunk = layer >= 0;
    if (p.has_chunk) VMSNAP_RETURN_IF_ERROR(p.stream.Begin(*chain, opts.fetch_chunk, layer, chunk));
    return true;
  }

  // Copies the stored pages of `p` with index in [from, to) that are decoded
  // and not in yet, a run of consecutive pages per UFFDIO_COPY.
  Status CopyDecoded(const internal::BlockGrid::Block& blk, Partial& p, size_t from, size_t to) {
    const uint32_t ready = p.stream.ready_pages();
    size_t e = from;
    while (e < to && p.pages[e].second < ready) {
      if (p.copied[e]) {
        ++e;
        continue;
      }
      size_t f = e + 1;
      while (f < to && !p.copied[f] && p.pages[f].second < ready && p.pages[f].first == p.pages[f - 1].first + 1 &&
             p.pages[f].second == p.pages[f - 1].second + 1) {
        ++f;
      }
      const uint64_t len = uint64_t(f - e) * ps;
      VMSNAP_RETURN_IF_ERROR(Copy(blk.host + uint64_t(p.pages[e].first) * ps,
                                  p.stream.data() + uint64_t(p.pages[e].second) * ps, len));
      n_bytes.fetch_add(len, std::memory_order_relaxed);
      for (size_t k = e; k < f; ++k) p.copied[k] = 1;
      p.left -= f - e;
      e = f;
    }
    return Status::Ok();
  }

  // Answers a fault on page `page` of block i, claimed from empty or
  // partial. Returns false when it filled the block whole instead (the
  // caller then answers as for a filled block).
  bool ServeClaimed(size_t i, uint32_t page) {
    const internal::BlockGrid::Block& blk = grid.block(i);
    Partial* p = partial_of[i];
    if (p == nullptr) {
      // Resolved once, for the partial set-up and for a whole fill alike.
      internal::ResolvePages(*chain, blk, refs);
      p = TakePartial();
      if (p != nullptr) {
        auto one_chunk = SetUpPartial(i, *p);
        if (!one_chunk.ok() || !*one_chunk) GiveBack(p);
        if (!one_chunk.ok()) {
          MarkFailed(i, one_chunk.status());
          return true;  // failed: no page for this thread
        }
        if (*one_chunk) partial_of[i] = p;
      }
      if (partial_of[i] == nullptr) {
        if (!handler_reader) handler_reader = std::make_unique<internal::BlockReader>(*chain, opts.fetch_chunk);
        FillClaimed(i, *handler_reader, true, &refs);
        return false;
      }
    }
    // Counted before the answer wakes the faulting thread.
    n_partial.fetch_add(1, std::memory_order_relaxed);
    uint8_t* const host = blk.host + uint64_t(page) * ps;
    const int32_t e = p->entry[page];
    Status s;
    if (e < 0) {
      s = ZeroPage(host);
    } else if (p->copied[size_t(e)]) {
      Wake(host);  // copied since the fault was queued
    } else {
      const uint32_t raw = p->pages[size_t(e)].second;
      s = p->stream.Ready(raw + 1);
      // The faulting page first: the copy wakes its thread.
      if (s.ok()) s = CopyDecoded(blk, *p, size_t(e), size_t(e) + 1);
      if (s.ok()) {
        size_t to = size_t(e) + 1;
        while (to < p->pages.size() && p->pages[to].first < page + 1 + kPagesAhead) ++to;
        s = CopyDecoded(blk, *p, size_t(e) + 1, to);
      }
    }
    if (!s.ok()) {
      MarkFailed(i, s);
      return true;
    }
    if (p->left == 0) {
      // Every stored page is in; the block counts as filled once the rest
      // of its chunk decodes and checks.
      if (p->has_chunk) s = p->stream.Finish();
      if (!s.ok()) {
        MarkFailed(i, s);
      } else {
        MarkFilled(i, true);
      }
      return true;
    }
    // Parked, then queued for the background (which skips it if a fault
    // has taken it again by then, or finished it from an earlier entry).
    // Without a background nothing takes from the queue.
    state[i].store(kPartial);
    state[i].notify_all();
    if (opts.background) {
      std::lock_guard<std::mutex> lock(mu);
      parked.push_back(i);
    }
    cv.notify_all();
    return true;
  }

  // Finishes block i, claimed from partial: the rest of its chunk decoded
  // and checked, then its remaining pages copied in.
  void FinishClaimed(size_t i) {
    Partial& p = *partial_of[i];
    Status s = p.has_chunk ? p.stream.Finish() : Status::Ok();
    if (s.ok()) s = CopyDecoded(grid.block(i), p, 0, p.pages.size());
    if (!s.ok()) {
      MarkFailed(i, s);
      return;
    }
    MarkFilled(i, false);
  }

  void ServeFault(uint8_t* page) {
    n_faults.fetch_add(1, std::memory_order_relaxed);
    (void)Serve(page);
  }

  // Fills the pages of LazyOptions::first_pages, as faults on them would be,
  // then, with LazyOptions::start_pages, those the vCPUs resume on.
  void ServeFirstPages() {
    for (uint64_t gpa : opts.first_pages) {
      if (uint8_t* host = HostPage(gpa)) {
        Serve(host);
        n_first.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (!opts.start_pages) return;
    ServedMemory memory(*this);
    for (uint64_t gpa : guest::StartPages(chain->leaf().manifest(), memory)) {
      if (uint8_t* host = HostPage(gpa)) (void)memory.Bring(host);
    }
  }

  // The host page that backs guest-physical `gpa`, or null outside guest memory.
  uint8_t* HostPage(uint64_t gpa) const {
    const uint64_t at = gpa & ~uint64_t(ps - 1);
    for (const GuestRegion& r : grid.regions()) {
      if (at >= r.gpa && at - r.gpa < r.size) return r.host + (at - r.gpa);
    }
    return nullptr;
  }

  // Guest memory as the fault handler reads it for the start pages' walks:
  // each page is served first, as a fault on it would be, and read only once
  // it is in. A page of a block that failed is never read (the handler would
  // wait on its own fault forever): the read fails instead.
  class ServedMemory final : public guest::PhysicalMemory {
   public:
    explicit ServedMemory(Impl& pager) : pager_(pager) {
      for (const GuestRegion& r : pager.grid.regions()) regions_.push_back({r.gpa, r.size, r.name});
      std::sort(regions_.begin(), regions_.end(), [](auto& a, auto& b) { return a.gpa < b.gpa; });
    }
    const std::vector<guest::Region>& regions() const override { return regions_; }
    Status Read(uint64_t gpa, uint64_t len, uint8_t* out) const override {
      VMSNAP_RETURN_IF_ERROR(guest::CheckInside(regions_, gpa, len));
      while (len > 0) {
        uint8_t* host = pager_.HostPage(gpa);
        const uint64_t off = gpa & (pager_.ps - 1);
        const uint64_t n = std::min<uint64_t>(len, pager_.ps - off);
        if (host == nullptr || !Bring(host)) {
          return Status::Io("the page at guest-physical " + Hex(gpa & ~uint64_t(pager_.ps - 1)) + " did not come in");
        }
        std::memcpy(out, host + off, n);
        gpa += n;
        out += n;
        len -= n;
      }
      return Status::Ok();
    }
    // Serves the page at `host` unless it did already; true when it is in.
    bool Bring(uint8_t* host) const {
      if (std::find(in_.begin(), in_.end(), host) != in_.end()) return true;
      if (!pager_.Serve(host)) return false;
      in_.push_back(host);
      pager_.n_start.fetch_add(1, std::memory_order_relaxed);
      return true;
    }

   private:
    Impl& pager_;
    std::vector<guest::Region> regions_;
    mutable std::vector<uint8_t*> in_;
  };

  // Answers an access to `page` (page-aligned, in guest memory or not).
  // Returns true when the page is in guest memory on return: never for a
  // page of a block that failed (and, conservatively, not for one whose
  // block failed just after the page came in).
  bool Serve(uint8_t* page) {
    const long bi = grid.Find(page);
    if (bi < 0) {
      Wake(page);  // not ours: cannot happen with missing-mode registration of our regions only
      return false;
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
    const uint32_t in_block = uint32_t(uint64_t(page - grid.block(i).host) / ps);
    for (;;) {
      uint8_t st = state[i].load();
      if (st == kEmpty || st == kPartial) {
        if (!state[i].compare_exchange_strong(st, kFilling)) continue;
        if (ServeClaimed(i, in_block)) return state[i].load() != kFailed;
        continue;
      }
      if (st == kFilling) {
        Boost();
        state[i].wait(kFilling);
        continue;
      }
      if (st == kFilled) {
        Status s = ZeroPage(page);
        if (!s.ok()) ReportError(s);
        return s.ok();
      }
      return false;  // kFailed: never hand this thread a page
    }
  }

  // Waits until Begin (true) or the pager's end (false).
  bool WaitBegun() {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return begun || stopping; });
    return begun && !stopping;
  }

  void HandlerLoop() {
    bool armed_early;
    {
      std::lock_guard<std::mutex> lock(mu);
      armed_early = !begun;
    }
    // A warm VM's pager waits for its snapshot: time to prepare, once the
    // start that made this VM's process (a pool refilled as another VM
    // starts) has had the CPU: the preparation is not urgent, the start is.
    // A VM bound ahead (its fill held) is still idle when it gets its
    // snapshot, maybe before that delay: it makes its spares then.
    if (armed_early) {
      std::unique_lock<std::mutex> lock(mu);
      const bool given = cv.wait_for(lock, kArmedPrepareDelay, [&] { return begun || stopping; });
      const bool idle = !given || held;
      lock.unlock();
      if (idle) MakeSpares();
    }
    if (!WaitBegun()) return;
    ServeFirstPages();
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

  // The first background thread starts the others once the pager has its
  // snapshot, and unregisters the regions when every block is filled.
  void FinisherLoop() {
    SetBackgroundPriority();
    if (!WaitBegun()) return;
    unsigned bg = opts.background_threads;
    if (bg == 0) bg = std::max(1u, std::thread::hardware_concurrency() - 1);
    if (!opts.background) bg = 1;  // only the finisher, which fills nothing
    std::vector<std::thread> others;
    for (unsigned t = 1; t < bg; ++t) {
      others.emplace_back([this] {
        SetBackgroundPriority();
        BackgroundLoop(false);
      });
    }
    BackgroundLoop(true);
    for (auto& t : others) t.join();
  }

  // The fill is work nobody waits for yet: on a busy host it must not take
  // the CPU from the thread restoring the VM, the vCPUs or the fault
  // handler (which serves what a vCPU waits for). On an idle core it runs
  // as before.
  void SetBackgroundPriority() {
    const pid_t tid = pid_t(::syscall(SYS_gettid));
    std::lock_guard<std::mutex> lock(mu);
    background_tids.push_back(tid);
    if (!boosted.load()) (void)::setpriority(PRIO_PROCESS, tid, kBackgroundNice);
  }

  void BackgroundLoop(bool finisher) {
    internal::BlockReader reader(*chain, opts.fetch_chunk);
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return stopping || !held; });
      cv.wait_until(lock, begun_at + kFirstFaultsWindow, [&] { return stopping; });
    }
    for (bool all_filled = false; !all_filled;) {
      size_t i = 0;
      {
        std::unique_lock<std::mutex> lock(mu);
        for (bool picked = false; !picked;) {
          if (stopping || failed.load()) return;
          if (opts.background && !parked.empty()) {
            i = parked.front();
            parked.pop_front();
            picked = true;
          } else if (opts.background && !hints.empty()) {
            i = hints.front();
            hints.pop_front();
            picked = true;
          } else if (opts.background && sweep.load() < grid.count() && (i = sweep.fetch_add(1)) < grid.count()) {
            picked = true;
          } else if (!finisher) {
            return;
          } else if (filled.load() == grid.count()) {
            all_filled = true;
            break;
          } else {
            // Blocks the handler parks after the sweep passed them come
            // here, and so does the last block filled.
            cv.wait(lock);
          }
        }
      }
      if (all_filled) break;
      uint8_t st = state[i].load();
      if (st == kEmpty && state[i].compare_exchange_strong(st, kFilling)) {
        FillClaimed(i, reader, false);
      } else if (st == kPartial && state[i].compare_exchange_strong(st, kFilling)) {
        FinishClaimed(i);
      }
    }
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
    {
      std::lock_guard<std::mutex> lock(mu);
      done = true;
    }
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

LazyPager::LazyPager(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<LazyPager>> LazyPager::Arm(std::span<const GuestRegion> regions) {
  auto impl = std::make_shared<Impl>(regions);
  const long host_page = ::sysconf(_SC_PAGESIZE);
  for (const GuestRegion& r : impl->armed) {
    if (r.host == nullptr || r.size == 0 || host_page <= 0 ||
        reinterpret_cast<uintptr_t>(r.host) % uint64_t(host_page) != 0 || r.size % uint64_t(host_page) != 0) {
      return Status::InvalidArgument("guest region at gpa " + Hex(r.gpa) + " (" + std::to_string(r.size) +
                                     " bytes) is empty or not page-aligned");
    }
  }
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
  for (const GuestRegion& r : impl->armed) {
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
  Impl* p = impl.get();
  p->handler = std::thread([impl] { impl->HandlerLoop(); });
  p->finisher = std::thread([impl] { impl->FinisherLoop(); });
  return std::unique_ptr<LazyPager>(new LazyPager(std::move(impl)));
}

Status LazyPager::Begin(const SnapshotChain& chain, std::span<const GuestRegion> regions, LazyOptions options) {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.begun || m.stopping || m.disarmed) {
      return Status::InvalidArgument("this pager was given a snapshot already, or disarmed");
    }
  }
  auto same = [](const GuestRegion& a, const GuestRegion& b) {
    return a.host == b.host && a.gpa == b.gpa && a.size == b.size;
  };
  if (regions.size() != m.armed.size() || !std::equal(regions.begin(), regions.end(), m.armed.begin(), same)) {
    return Status::InvalidArgument("the pager was armed for other memory regions");
  }
  VMSNAP_RETURN_IF_ERROR(m.grid.Init(chain, m.armed));
  m.ps = m.grid.page_size();
  m.state = std::make_unique<std::atomic<uint8_t>[]>(m.grid.count());
  m.partial_of = std::make_unique<Partial*[]>(m.grid.count());
  m.chain = &chain;
  m.opts = std::move(options);
  if (!m.opts.background) m.sweep = m.grid.count();
  {
    std::lock_guard<std::mutex> lock(m.mu);
    m.begun = true;
    m.held = m.opts.hold_fill;
    m.begun_at = std::chrono::steady_clock::now();
  }
  m.cv.notify_all();
  return Status::Ok();
}

void LazyPager::Release() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (!m.held) return;
    m.held = false;
    m.begun_at = std::chrono::steady_clock::now();
  }
  m.cv.notify_all();
}

Result<std::unique_ptr<LazyPager>> LazyPager::Start(const SnapshotChain& chain,
                                                    std::span<const GuestRegion> regions,
                                                    LazyOptions options) {
  VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<LazyPager> pager, Arm(regions));
  VMSNAP_RETURN_IF_ERROR(pager->Begin(chain, regions, std::move(options)));
  return pager;
}

LazyPager::~LazyPager() {
  if (!impl_) return;
  bool begun;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    begun = impl_->begun;
    if (!begun && !impl_->disarmed) {
      // Armed and never given a snapshot (a warm VM whose load maps an
      // image instead): nothing was filled and nothing is owed. The memory
      // goes back to being ordinary anonymous memory now; the threads,
      // which only wait, end on their own and free the rest, so that the
      // load does not wait for them to be scheduled (the fill thread runs
      // at nice 19).
      for (const GuestRegion& r : impl_->armed) {
        struct uffdio_range range = {reinterpret_cast<uintptr_t>(r.host), r.size};
        (void)::ioctl(impl_->uffd.get(), UFFDIO_UNREGISTER, &range);
      }
    }
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (!begun) {
    impl_->finisher.detach();
    impl_->handler.detach();
    return;
  }
  impl_->finisher.join();
  const uint64_t one = 1;
  // An eventfd write of 1 cannot fail short of a kernel bug; the handler polls it.
  (void)!::write(impl_->stop_efd.get(), &one, sizeof(one));
  impl_->handler.join();
  if (!impl_->done && impl_->fence) impl_->FenceUnfilled();
}

void LazyPager::SkipFence() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->fence = false;
}

void LazyPager::Disarm() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->begun || impl_->disarmed) return;
  for (const GuestRegion& r : impl_->armed) {
    struct uffdio_range range = {reinterpret_cast<uintptr_t>(r.host), r.size};
    (void)::ioctl(impl_->uffd.get(), UFFDIO_UNREGISTER, &range);
  }
  impl_->disarmed = true;
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
  s.partial_faults = impl_->n_partial.load();
  s.first_pages = impl_->n_first.load();
  s.start_pages = impl_->n_start.load();
  return s;
}

uint64_t LazyPager::total_bytes() const { return impl_->grid.total_bytes(); }

}  // namespace vmsnap::memory
