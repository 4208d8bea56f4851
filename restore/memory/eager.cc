// SPDX-License-Identifier: MIT
// Eager load: every block decoded and copied into guest memory before the VM
// starts, blocks handed out to one thread per core.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "restore/memory/blocks.h"
#include "restore/memory/loader.h"

namespace vmsnap::memory {

Status LoadEager(const SnapshotChain& chain, std::span<const GuestRegion> regions,
                 const EagerOptions& options) {
  internal::BlockGrid grid;
  VMSNAP_RETURN_IF_ERROR(grid.Init(chain, regions));
  const uint32_t ps = grid.page_size();
  unsigned threads = options.threads ? options.threads : std::thread::hardware_concurrency();
  threads = std::clamp<unsigned>(threads, 1, unsigned(std::max<size_t>(grid.count(), 1)));

  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done_bytes{0};
  std::atomic<bool> failed{false};
  std::mutex error_mu;
  Status first_error;

  auto work = [&](bool report) {
    internal::BlockReader reader(chain);
    using Clock = std::chrono::steady_clock;
    auto last = Clock::now();
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= grid.count()) return;
      const internal::BlockGrid::Block& blk = grid.block(i);
      Status s = reader.Read(
          blk,
          [&](const internal::Run& run) {
            uint8_t* dst = blk.host + uint64_t(run.first_page) * ps;
            const uint64_t len = uint64_t(run.pages) * ps;
            if (run.src) {
              std::memcpy(dst, run.src, len);
            } else if (!options.destination_zeroed) {
              std::memset(dst, 0, len);
            }
            return Status::Ok();
          },
          blk.host);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (first_error.ok()) first_error = s;
        failed = true;
        return;
      }
      const uint64_t d = done_bytes.fetch_add(uint64_t(blk.pages) * ps) + uint64_t(blk.pages) * ps;
      if (report && options.progress) {
        const auto now = Clock::now();
        if (now - last >= std::chrono::milliseconds(50)) {
          last = now;
          options.progress(d, grid.total_bytes());
        }
      }
    }
  };

  std::vector<std::thread> workers;
  workers.reserve(threads - 1);
  for (unsigned t = 1; t < threads; ++t) workers.emplace_back(work, false);
  work(true);  // the caller works too, and is the one that reports progress
  for (auto& w : workers) w.join();
  if (!first_error.ok()) return first_error;
  if (options.progress) options.progress(grid.total_bytes(), grid.total_bytes());
  return Status::Ok();
}

}  // namespace vmsnap::memory
