// SPDX-License-Identifier: MIT
// Guest memory loaders: fill a VM's memory from a snapshot chain, either at
// once on every core (eager) or on demand through userfaultfd (lazy), so that a
// VM can start running before its memory has been read.
//
// Both loaders work in blocks: each guest region is cut into blocks the size of
// the snapshot's chunks (aligned to the region start, as the writer cuts them),
// and a block is the unit that is decoded, checked and filled exactly once.
// Where a page comes from is resolved per block, leaf layer first, so an
// incremental chain costs no more than a full snapshot and nothing proportional
// to memory size happens before the lazy pager starts.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "format/chain.h"
#include "base/progress.h"
#include "base/status.h"
#include "kvm/kvm.h"

namespace vmsnap::memory {

// One range of guest memory as the VMM mapped it: the same region type as
// capture and the VMM use. `host` must be page-aligned private anonymous
// memory (for the lazy pager: never touched before Start()).
using GuestRegion = kvm::GuestRegion;

struct EagerOptions {
  unsigned threads = 0;          // 0 = one per core
  // The regions are freshly mapped anonymous memory that reads as zero, so
  // zero pages need not be written (and do not cost resident memory).
  bool destination_zeroed = true;
  // (bytes done, bytes total), from the thread that called LoadEager; may
  // be empty; called at most every ~50 ms and at the end.
  ProgressFn progress;
};

// Fills `regions` with the chain's memory as of its leaf, decoding blocks on
// `threads` threads. Pages of the regions that no layer defines are zero.
// Returns the first error (naming the file and the chunk); on error the
// memory's content is unspecified.
Status LoadEager(const SnapshotChain& chain, std::span<const GuestRegion> regions,
                 const EagerOptions& options = {});

// Makes the stored bytes of chunk `chunk` of layer `layer` (0 = the chain's
// base) readable in its file, for a snapshot whose file is filled on demand
// (a store's local cache); called before every read of a chunk, from several
// threads at once. An error fails the block as a checksum mismatch would.
using ChunkFetchFn = std::function<Status(size_t layer, size_t chunk)>;

struct LazyOptions {
  unsigned background_threads = 0;  // 0 = max(1, cores - 1): leave a core to the vCPUs
  // false: fill only on faults (demand paging alone; for tests and measurements).
  bool background = true;
  // Called once, from a pager thread, with the first error (a chunk that fails
  // its checksum or does not decode, a failed userfaultfd call). The VMM must
  // stop the VM here: a thread that faulted on a page of a block that failed
  // is never woken with a page (it stays blocked), and when the pager is
  // destroyed every page that was never filled is poisoned (or, on kernels
  // without UFFDIO_POISON, made inaccessible), so no access ever reads a wrong
  // page.
  std::function<void(const Status&)> on_error;
  // Empty: every chunk is in the file already.
  ChunkFetchFn fetch_chunk;
  // Guest-physical addresses whose pages the fault handler fills as soon as
  // it has the snapshot, before it serves any fault, each as a fault on it
  // would be: the pages the VMM itself touches before the guest runs (the
  // generation ID's). Each would otherwise be a fault on the way to the
  // guest's first instruction, served while the VMM waits; filled ahead,
  // they come in while it restores the vCPUs. Addresses outside guest
  // memory are ignored.
  std::vector<uint64_t> first_pages;
  // true: after first_pages, the fault handler also fills the pages each
  // vCPU of the snapshot resumes on: the page of the instruction it runs
  // next, that of the top of its stack, and the page tables that map them
  // (guest/start_pages.h; x86_64 and aarch64), as faults on them would be.
  // The guest's first instructions then find their pages in, and a VM
  // restored ahead of its start (hold_fill) holds them while it waits. A
  // page whose chunk fails is not waited for: the error goes to on_error
  // as for a fault, and the walk moves on.
  bool start_pages = false;
  // true: the background fill waits for LazyPager::Release; faults and
  // first_pages are served meanwhile. For a VM restored ahead of its start
  // (a warm VM bound to a snapshot it pages in): idle, it holds only the
  // pages it touched, not a copy of the snapshot's memory.
  bool hold_fill = false;
};

// Counters, for tests and the benchmark.
struct LazyStats {
  uint64_t faults = 0;             // page-fault messages served
  uint64_t fault_fills = 0;        // blocks filled by the fault handler
  uint64_t background_fills = 0;   // blocks filled by background threads
  uint64_t zero_page_faults = 0;   // faults resolved with the zero page
  uint64_t bytes_filled = 0;       // bytes of non-zero pages copied in
  uint64_t partial_faults = 0;     // faults (and first pages) answered before their block was whole
  uint64_t first_pages = 0;        // LazyOptions::first_pages filled before any fault
  uint64_t start_pages = 0;        // pages LazyOptions::start_pages brought in (page tables included)
};

// Whether userfaultfd can serve this process's (and KVM's) faults: the syscall
// or /dev/userfaultfd works and the API handshake succeeds. The message says
// why not (e.g. vm.unprivileged_userfaultfd=0 without CAP_SYS_PTRACE).
Status CheckUserfaultfd();

// The lazy loader: registers the regions with userfaultfd (missing mode) and
// serves faults from the chain while background threads fill the rest, blocks
// nearest recent faults first, then from low memory up. Once every block is
// filled the regions are unregistered, so the zero pages that were never
// touched fault in as ordinary anonymous memory.
//
// A first fault on a block whose pages come from one chunk decodes that chunk
// only as far as the faulting page (after checking its stored bytes against
// their checksum), so the first pages a VM touches cost a fraction of their
// chunks; the decoded pages' own checksum is checked when the rest of the
// chunk is decoded, before the block counts as filled.
class LazyPager {
 public:
  // Arm then Begin. Returns once the regions are registered and the threads
  // started: no work proportional to memory size happens here. `chain` must
  // outlive the pager.
  static Result<std::unique_ptr<LazyPager>> Start(const SnapshotChain& chain,
                                                  std::span<const GuestRegion> regions,
                                                  LazyOptions options = {});
  // The part of Start that needs no snapshot, for a warm VM that waits for
  // one: registers `regions` with userfaultfd, starts the threads and makes
  // the decoders' memory. Until Begin, nothing may touch the regions (a
  // touch waits for Begin). A pager destroyed without Begin unregisters the
  // regions and leaves their memory as it was.
  static Result<std::unique_ptr<LazyPager>> Arm(std::span<const GuestRegion> regions);
  // Gives an armed pager its snapshot: `regions` must be those it was armed
  // with (else InvalidArgument, and it stays armed), laid out as the
  // snapshot's memory. Once only.
  Status Begin(const SnapshotChain& chain, std::span<const GuestRegion> regions, LazyOptions options = {});
  // For an armed pager that will not be given a snapshot (the memory is
  // mapped from an image instead): unregisters the regions now and leaves
  // the waiting threads and the decoders' memory to the destructor, off
  // the way to the guest's first instruction. Begin then refuses.
  void Disarm();
  // Lets a fill held by LazyOptions::hold_fill begin (after the usual first
  // faults' window, counted from now). Does nothing otherwise.
  void Release();
  // For an owner that replaces the regions' memory as soon as the pager is
  // destroyed: the destructor then leaves the pages never filled as they
  // are (fencing them costs page-table entries for all of guest memory,
  // milliseconds per GiB on a host with shadow paging).
  void SkipFence();
  ~LazyPager();
  LazyPager(const LazyPager&) = delete;
  LazyPager& operator=(const LazyPager&) = delete;

  // Blocks until every block is filled and the regions are unregistered, or
  // until the first error. Returns that error, or Ok.
  Status Wait();
  bool done() const;
  Status first_error() const;
  LazyStats stats() const;
  uint64_t total_bytes() const;

  struct Impl;

 private:
  explicit LazyPager(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;  // shared with its threads (see the destructor)
};

// Maps the chain's stored pages copy-on-write straight from the snapshot file
// (MAP_PRIVATE | MAP_FIXED over the regions), for a single uncompressed
// snapshot: no page is read until the guest touches it, and zero pages stay
// anonymous. Unsupported (and nothing mapped) for compressed or incremental
// snapshots or when the stored runs would need more mappings than
// `max_mappings`. Checksums are NOT checked before the guest sees a page;
// callers that need that guarantee use LazyPager (or verify the file first).
// `before_mapping`, if given, runs once the mapping is known to be possible,
// just before the first mmap (a caller that must give up something to map,
// an armed pager, does it there and keeps it on Unsupported).
Status MapCopyOnWrite(const SnapshotChain& chain, std::span<const GuestRegion> regions,
                      uint64_t max_mappings = 16384, const std::function<void()>& before_mapping = {});

}  // namespace vmsnap::memory
