// SPDX-License-Identifier: MIT
// SnapshotWriter: a pipeline that detects zero pages and compresses chunks on
// worker threads while one I/O thread writes finished chunks in order.
//
// Memory stays bounded: a fixed pool of slots (a few per worker) carries each
// chunk from AddMemory through a worker to the I/O thread and back; each slot
// owns its buffers, so the hot path allocates nothing after start-up. Guest
// memory is referenced, never copied wholesale: uncompressed chunks are
// written straight from the caller's pages.
#include "format/writer.h"

#include <capnp/serialize.h>
#include <xxhash.h>
#include <zstd.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "format/layout.h"
#include "format/output.h"

namespace vmsnap {
namespace {

// Distinct byte values among 256 sampled above which a page counts as
// incompressible. Random pages give 162 on average, under 150 for one page
// in 200 and under 140 for one in 17 000 (the bench image's); pages of
// QEMU's and libc's code give 140 or more for 0.5% of their pages, which
// zstd -1 shrinks by 1-12%.
constexpr int kRandomDistinct = 140;

bool IsZero(const uint8_t* p, size_t n) {
  // 64 bytes per step, OR-reduced: the compiler turns this into vector loads,
  // and a non-zero page usually fails in its first block.
  for (size_t i = 0; i < n; i += 64) {
    uint64_t w[8];
    std::memcpy(w, p + i, 64);
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
  }
  return true;
}

// Whether a page looks incompressible (random, encrypted or already
// compressed data), from 256 bytes sampled across it: such bytes take about
// 162 distinct values out of 256, text 30-60 and most binary data (code,
// tables, heap) under 110. A guess, used only by the adaptive codec to
// spare zstd a chunk it would store raw anyway; a wrong guess costs file
// size, never correctness.
bool LooksIncompressible(const uint8_t* p, size_t n) {
  uint64_t seen[4] = {0, 0, 0, 0};
  const size_t stride = n / 4;
  for (size_t part = 0; part < 4; ++part) {
    const uint8_t* q = p + part * stride;
    for (size_t i = 0; i < 64; ++i) seen[q[i] >> 6] |= uint64_t(1) << (q[i] & 63);
  }
  const int distinct = __builtin_popcountll(seen[0]) + __builtin_popcountll(seen[1]) +
                       __builtin_popcountll(seen[2]) + __builtin_popcountll(seen[3]);
  return distinct > kRandomDistinct;
}

inline bool Bit(const uint8_t* bm, uint64_t i) { return (bm[i >> 3] >> (i & 7)) & 1; }
inline void SetBit(uint8_t* bm, uint64_t i) { bm[i >> 3] |= uint8_t(1u << (i & 7)); }

struct CctxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct XxhDeleter {
  void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
};

// One chunk in flight, with the buffers it reuses from chunk to chunk.
struct Slot {
  // Input.
  uint64_t seq = 0;
  uint64_t gpa = 0;
  const uint8_t* data = nullptr;
  uint32_t pages = 0;
  bool has_defined = false;
  std::vector<uint8_t> defined;
  bool try_compress = false;  // chosen when the chunk was handed to a worker
  int level = 0;               // the zstd level, when try_compress
  // Output.
  std::vector<uint8_t> present;
  // Allocated on first use and not zeroed: a save that stores its chunks raw
  // never touches them.
  std::unique_ptr<uint8_t[]> gather;  // stored pages back to back, when compressing a sparse chunk
  std::unique_ptr<uint8_t[]> frame;   // the zstd frame
  uint64_t stored_pages = 0;
  uint64_t raw_checksum = 0;
  uint64_t stored_checksum = 0;
  size_t frame_len = 0;
  bool compressed = false;
  const uint8_t* raw_contig = nullptr;  // the stored pages contiguous, if they are
  Status status;
};

// What the manifest says about one written chunk.
struct ChunkMeta {
  uint64_t gpa;
  uint32_t pages;
  std::vector<uint8_t> present;
  std::vector<uint8_t> defined;  // empty: all defined
  uint64_t file_offset;
  uint64_t stored_length;
  uint64_t raw_length;
  bool compressed;
  uint64_t checksum;
  uint64_t raw_checksum;
};

class WriterImpl final : public SnapshotWriter {
 public:
  WriterImpl(const WriterOptions& o, std::unique_ptr<OutputFile> file)
      : opts_(o), file_(std::move(file)) {
    workers_n_ = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
    // With auto, chunks take very different times (a raw one a tenth of a
    // millisecond, a compressed one a few): a deeper queue lets the raw ones
    // flow past one being compressed instead of waiting behind it.
    const size_t nslots = std::max<size_t>(4, size_t(workers_n_) * (o.adaptive ? 8 : 3));
    slots_.resize(nslots);
    ring_.assign(nslots, nullptr);
    for (auto& s : slots_) {
      s = std::make_unique<Slot>();
      s->defined.reserve((o.chunk_pages + 7) / 8);
      s->present.reserve((o.chunk_pages + 7) / 8);
      free_.push_back(s.get());
    }
    manifest_ = message_->initRoot<schema::Manifest>();
    // The adaptive ladder: raw, then zstd levels up to the ceiling. Level 1
    // first: on text it costs about what level 3 does per byte and gives
    // most of the gain, so raw to level 1 is the step that matters.
    ladder_.push_back(0);
    for (int l : {1, 3, 6, 9, 12, 15, 19}) {
      if (l <= std::max(1, o.zstd_level)) ladder_.push_back(l);
    }
  }

  ~WriterImpl() override {
    {
      // Abandoned: drop queued chunks instead of compressing them for nothing.
      std::lock_guard<std::mutex> lk(mu_);
      abandon_ = true;
    }
    StopThreads();
    if (!committed_) file_.reset();  // removes the temporary
  }

  Status Start() {
    // The header goes out before any thread exists; from then on only the I/O
    // thread touches the file until Commit() has joined it.
    uint8_t hdr[layout::kHeaderSize];
    layout::Header h;
    h.minor = opts_.format_minor;
    layout::EncodeHeader(h, hdr);
    VMSNAP_RETURN_IF_ERROR(file_->Append(hdr, sizeof hdr));
    offset_ = layout::kHeaderSize;
    ncpu_ = std::max(1u, std::thread::hardware_concurrency());
    window_start_ns_ = NowNs();
    window_cpu_ns_ = ProcessCpuNs();
    (void)MachineBusy(window_start_ns_);  // the starting point
    for (unsigned i = 0; i < workers_n_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
    io_thread_ = std::thread([this] { IoLoop(); });
    return Status::Ok();
  }

  schema::Manifest::Builder manifest() override { return manifest_; }

  Status AddMemory(uint64_t gpa, const uint8_t* data, uint64_t len) override {
    return Add(gpa, data, len, nullptr);
  }
  Status AddPages(uint64_t gpa, const uint8_t* data, uint64_t len,
                  const uint8_t* defined) override {
    if (defined == nullptr) return Status::InvalidArgument("AddPages: defined bitmap is null");
    return Add(gpa, data, len, defined);
  }

  Status Commit() override {
    if (committed_) return Status::InvalidArgument("snapshot already committed");
    Status s = Finish();
    if (!s.ok()) {
      file_.reset();  // removes the temporary
      std::lock_guard<std::mutex> lk(mu_);
      if (error_.ok()) error_ = s;
    }
    return s;
  }

  layout::SnapshotId id() const override { return id_; }
  uint64_t file_size() const override { return file_size_; }

 private:
  Status Add(uint64_t gpa, const uint8_t* data, uint64_t len, const uint8_t* defined) {
    if (committed_ || finishing_) return Status::InvalidArgument("snapshot already committed");
    const uint64_t ps = opts_.page_size;
    if (gpa % ps != 0 || len % ps != 0) {
      return Status::InvalidArgument("memory range " + Hex(gpa) + "+" + Hex(len) +
                                     " is not page-aligned (page size " + std::to_string(ps) +
                                     ")");
    }
    if (len == 0) return Status::Ok();
    if (data == nullptr) return Status::InvalidArgument("memory range " + Hex(gpa) + ": no data");
    if (gpa + len < gpa) {
      return Status::InvalidArgument("memory range " + Hex(gpa) + "+" + Hex(len) + " overflows");
    }
    if (have_last_ && gpa < last_end_) {
      return Status::InvalidArgument("memory range at " + Hex(gpa) +
                                     " is not after the previous one (which ended at " +
                                     Hex(last_end_) + ")");
    }
    have_last_ = true;
    last_end_ = gpa + len;
    {
      std::lock_guard<std::mutex> lk(mu_);  // the I/O thread reads it for progress
      added_bytes_ += len;
    }

    const uint64_t total_pages = len / ps;
    for (uint64_t first = 0; first < total_pages; first += opts_.chunk_pages) {
      const uint32_t n = uint32_t(std::min<uint64_t>(opts_.chunk_pages, total_pages - first));
      Slot* slot = nullptr;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_free_.wait(lk, [&] { return !free_.empty() || !error_.ok(); });
        if (!error_.ok()) return error_;
        slot = free_.back();
        free_.pop_back();
      }
      slot->gpa = gpa + first * ps;
      slot->data = data + first * ps;
      slot->pages = n;
      slot->has_defined = false;
      if (defined != nullptr) {
        slot->defined.assign((n + 7) / 8, 0);
        uint32_t count = 0;
        for (uint32_t i = 0; i < n; ++i) {
          if (Bit(defined, first + i)) {
            SetBit(slot->defined.data(), i);
            ++count;
          }
        }
        if (count == 0) {  // nothing of this chunk is defined here: no chunk at all
          std::lock_guard<std::mutex> lk(mu_);
          free_.push_back(slot);
          done_bytes_ += uint64_t(n) * ps;
          continue;
        }
        slot->has_defined = count != n;
      }
      std::lock_guard<std::mutex> lk(mu_);
      slot->seq = submitted_++;
      pending_.push_back(slot);
      cv_work_.notify_one();
    }
    return Status::Ok();
  }

  void WorkerLoop() {
    std::unique_ptr<ZSTD_CCtx, CctxDeleter> cctx;
    if (opts_.compression == schema::Compression::ZSTD) {
      cctx.reset(ZSTD_createCCtx());
      if (cctx) {
        ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_contentSizeFlag, 1);
        ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 0);  // we checksum ourselves
      }
    }
    std::unique_ptr<XXH3_state_t, XxhDeleter> xxh(XXH3_createState());
    for (;;) {
      Slot* slot;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_work_.wait(lk, [&] { return !pending_.empty() || stop_; });
        if (pending_.empty() || abandon_) return;
        slot = pending_.front();
        pending_.pop_front();
        // Chosen now rather than when queued, so the choice reflects the
        // pipeline as it is when the work starts.
        ChooseCodecLocked(slot);
      }
      const bool spared = Process(slot, cctx.get(), xxh.get());
      std::lock_guard<std::mutex> lk(mu_);
      // The compression this chunk did not need goes to a later chunk, so
      // that the share of compressible memory compressed follows `effort_`.
      if (spared && effort_ < 1) owed_ = std::min<uint64_t>(owed_ + 1, workers_n_);
      ring_[slot->seq % ring_.size()] = slot;
      cv_done_.notify_all();
    }
  }

  // Fills in the slot's output. True when the adaptive codec chose to
  // compress the chunk but spared zstd its incompressible-looking pages.
  bool Process(Slot* s, ZSTD_CCtx* cctx, XXH3_state_t* xxh) {
    const size_t ps = opts_.page_size;
    s->status = Status::Ok();
    s->present.assign((s->pages + 7) / 8, 0);
    s->stored_pages = 0;
    s->compressed = false;
    s->raw_contig = nullptr;
    s->frame_len = 0;
    if (xxh == nullptr) {
      s->status = Status::Internal("out of memory creating a checksum state");
      return false;
    }
    XXH3_64bits_reset(xxh);
    // The chunk's memory mapped in one call rather than by a page fault per
    // few pages (guest memory backed by a file, or never touched). A hint:
    // without it the reads below fault the pages in. Not for a chunk of
    // chosen pages (an incremental save's dirty ones): it would fault in,
    // or make a lazy restore's pager fetch, pages nobody reads.
#ifdef MADV_POPULATE_READ
    if (!s->has_defined) (void)::madvise(const_cast<uint8_t*>(s->data), size_t(s->pages) * ps, MADV_POPULATE_READ);
#endif
    const uint8_t* def = s->has_defined ? s->defined.data() : nullptr;
    // Stored pages in one run are compressed or written where they are. From
    // a second run on, a chunk to compress is gathered back to back, each
    // page copied right after it was checked and hashed, while it is still
    // in the cache.
    uint32_t first = 0, runs = 0;
    bool prev = false;
    uint8_t* out = nullptr;
    // The adaptive codec samples each page it stores while the page is in
    // the cache, to keep zstd off chunks of random pages.
    const bool sample = opts_.adaptive && s->try_compress;
    uint32_t random_pages = 0;
    for (uint32_t i = 0; i < s->pages; ++i) {
      const uint8_t* p = s->data + size_t(i) * ps;
      if ((def && !Bit(def, i)) || IsZero(p, ps)) {
        prev = false;
        continue;
      }
      SetBit(s->present.data(), i);
      ++s->stored_pages;
      XXH3_64bits_update(xxh, p, ps);
      if (sample) random_pages += LooksIncompressible(p, ps);
      if (!prev && runs++ == 0) first = i;
      prev = true;
      if (runs > 1 && s->try_compress) {
        if (out == nullptr) {
          if (!s->gather) s->gather.reset(new uint8_t[size_t(opts_.chunk_pages) * ps]);
          const size_t run = size_t(s->stored_pages - 1) * ps;  // the first run, [first, first + its pages)
          std::memcpy(s->gather.get(), s->data + size_t(first) * ps, run);
          out = s->gather.get() + run;
        }
        std::memcpy(out, p, ps);
        out += ps;
      }
    }
    s->raw_checksum = XXH3_64bits_digest(xxh);
    const size_t raw_len = size_t(s->stored_pages) * ps;
    if (raw_len == 0) {
      s->stored_checksum = s->raw_checksum;
      return false;
    }
    if (runs == 1) s->raw_contig = s->data + size_t(first) * ps;
    if (out != nullptr) s->raw_contig = s->gather.get();
    if (!s->try_compress) {
      s->stored_checksum = s->raw_checksum;
      return false;
    }
    // Fewer than 1/16 of the stored pages compressible: even shrunk to
    // nothing they would not save the 1/16 the adaptive codec asks of a
    // compressed chunk (below), so zstd's time on the chunk would be wasted.
    if (sample && (s->stored_pages - random_pages) * 16 < s->stored_pages) {
      s->stored_checksum = s->raw_checksum;
      return true;
    }
    if (cctx == nullptr) {
      s->status = Status::Internal("out of memory creating a zstd context");
      return false;
    }
    if (opts_.before_compress) opts_.before_compress(s->level);
    ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, s->level);
    const size_t bound = ZSTD_compressBound(size_t(opts_.chunk_pages) * ps);
    if (!s->frame) s->frame.reset(new uint8_t[bound]);
    size_t n = ZSTD_compress2(cctx, s->frame.get(), bound, s->raw_contig, raw_len);
    if (ZSTD_isError(n)) {
      s->status = Status::Internal("chunk at gpa " + Hex(s->gpa) +
                                   ": zstd compression failed: " + ZSTD_getErrorName(n));
      return false;
    }
    // Incompressible (random pages): storing them raw costs less and keeps
    // them mappable. The adaptive codec also keeps a chunk raw when zstd
    // saves less than 1/16 of it: so small a gain is not worth a
    // decompression at every load and the loss of mapping.
    if (n >= raw_len || (opts_.adaptive && n > raw_len - raw_len / 16)) {
      s->stored_checksum = s->raw_checksum;
      return false;
    }
    s->compressed = true;
    s->frame_len = n;
    s->stored_checksum = layout::Checksum(s->frame.get(), n);
    return false;
  }

  // The adaptive codec, after zstd's --adapt: every few milliseconds the I/O
  // thread looks at how the last stretch went and moves `effort_`, a
  // fractional position on the ladder (raw, then rising zstd levels; each
  // chunk takes the rung below or above it so that, over a run of chunks,
  // the mix matches the fraction):
  // - this process, or the machine as a whole, kept (nearly) every core
  //   busy: more compression would wait for a core, so store more raw;
  // - else, the writer spent a good part of the time waiting for chunks the
  //   workers had: the workers are the limit (a slow level, or cores taken
  //   by something else), so compress less;
  // - else, if the writer spent a good part of the time waiting inside its
  //   writes (a slow disk, or writeback it waits for), or had little to do
  //   (the caller feeding memory is the limit), the cores have time to
  //   spare: compress harder, which leaves less to write;
  // - else the writer is busy copying into the page cache: it is the limit,
  //   and a chunk compressed ahead of it in the file order would only hold
  //   it up, so stay.
  void AdaptLocked(uint64_t now_ns) {
    const uint64_t wall = now_ns - window_start_ns_;
    if (wall < kWindowNs) return;
    const uint64_t cpu = ProcessCpuNs();
    const double ours = double(cpu - window_cpu_ns_) / double(wall * ncpu_);
    const double machine = MachineBusy(now_ns);
    const double starved = double(writer_starved_ns_) / double(wall);
    // Down faster than up: a save slowed by compressing too much loses
    // time, one that compresses too little only loses some file size.
    const double writing = double(writer_busy_ns_) / double(wall);
    // The writer's CPU time in the stretch is all spent writing, nearly:
    // waiting for a chunk takes none.
    const uint64_t writer_cpu = ThreadCpuNs() - writer_cpu_ns_;
    const double disk_wait = double(writer_busy_ns_ - std::min(writer_busy_ns_, writer_cpu)) / double(wall);
    const bool saturated = ours >= kSaturated || machine >= kMachineSaturated;
    double step = 0;
    if (saturated || starved >= kStarved) {
      step = -kEffortDown;
    } else if (disk_wait >= kDiskBound || writing < kWriterIdle) {
      step = kEffortUp;
    }
    effort_ = std::clamp(effort_ + step, 0.0, double(ladder_.size() - 1));
    if (step < 0) owed_ = 0;  // compressing less: no debt to pay
    window_start_ns_ = now_ns;
    window_cpu_ns_ = cpu;
    writer_starved_ns_ = 0;
    writer_busy_ns_ = 0;
    writer_cpu_ns_ = ThreadCpuNs();
  }

  // How busy every core of the machine was since the last call, whatever ran
  // on it (other processes too: compressing on a core they hold slows the
  // save just the same). 0 when /proc/stat cannot be read. /proc/stat counts
  // in 10 ms ticks, so it is read at most every kStatNs and its last figure
  // stands in between.
  double MachineBusy(uint64_t now_ns) {
    if (opts_.machine_busy) return opts_.machine_busy();
    if (stat_ns_ != 0 && now_ns - stat_ns_ < kStatNs) return machine_busy_;
    stat_ns_ = now_ns;
    const int fd = ::open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n < 5 || std::strncmp(buf, "cpu ", 4) != 0) return 0;
    buf[n] = 0;
    // user nice system idle iowait irq softirq steal: idle and iowait are
    // time a core had nothing to run (iowait: a disk kept it waiting).
    unsigned long long v[8] = {};
    const int k = std::sscanf(buf + 4, "%llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                              &v[4], &v[5], &v[6], &v[7]);
    if (k < 5) return 0;
    uint64_t total = 0;
    for (int i = 0; i < k; ++i) total += v[i];
    const uint64_t idle = v[3] + v[4];
    const uint64_t d_total = total - stat_total_, d_idle = idle - stat_idle_;
    const bool first = stat_total_ == 0;
    stat_total_ = total;
    stat_idle_ = idle;
    // Until /proc/stat has a stretch to compare, the load average stands in:
    // a save that starts on a machine whose cores are all taken must not
    // compress its first chunks (the writer, idle at the start, would ask
    // for it) and then wait for them behind every raw chunk.
    if (first) return machine_busy_ = LoadAverageBusy();
    if (d_total == 0) return machine_busy_;
    return machine_busy_ = 1.0 - double(d_idle) / double(d_total);
  }

  // The one-minute load average over the number of cores, at most 1; 0 when
  // /proc/loadavg cannot be read.
  double LoadAverageBusy() const {
    const int fd = ::open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buf[128];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    double load = 0;
    if (std::sscanf(buf, "%lf", &load) != 1 || !(load >= 0)) return 0;
    return std::min(1.0, load / double(ncpu_));
  }

  static uint64_t ThreadCpuNs() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  }

  static uint64_t ProcessCpuNs() {
    timespec ts{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  }

  static uint64_t NowNs() {
    return uint64_t(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count());
  }

  void ChooseCodecLocked(Slot* s) {
    if (!opts_.adaptive) {
      s->try_compress = opts_.compression == schema::Compression::ZSTD;
      s->level = opts_.zstd_level;
      return;
    }
    size_t rung = size_t(effort_);
    dither_ += effort_ - double(rung);
    if (dither_ >= 1.0 && rung + 1 < ladder_.size()) {
      dither_ -= 1.0;
      ++rung;
    } else if (owed_ > 0 && rung == 0 && effort_ > 0) {
      --owed_;
      rung = 1;
    }
    s->level = ladder_[rung];
    s->try_compress = s->level != 0;
  }

  Status Pad(uint64_t align) {
    static const uint8_t kZeros[4096] = {};
    uint64_t pad = (align - offset_ % align) % align;
    while (pad > 0) {
      size_t n = size_t(std::min<uint64_t>(pad, sizeof kZeros));
      VMSNAP_RETURN_IF_ERROR(file_->Append(kZeros, n));
      offset_ += n;
      pad -= n;
    }
    return Status::Ok();
  }

  Status WriteChunk(Slot* s) {
    VMSNAP_RETURN_IF_ERROR(s->status);
    const size_t ps = opts_.page_size;
    ChunkMeta m;
    m.gpa = s->gpa;
    m.pages = s->pages;
    m.present = s->present;
    if (s->has_defined) m.defined = s->defined;
    m.raw_length = s->stored_pages * ps;
    m.compressed = s->compressed;
    m.checksum = s->stored_checksum;
    m.raw_checksum = s->raw_checksum;
    m.file_offset = 0;
    m.stored_length = 0;
    if (m.raw_length > 0) {
      const uint64_t align = s->compressed ? layout::kChunkAlign
                                           : std::max<uint64_t>(layout::kChunkAlign, ps);
      VMSNAP_RETURN_IF_ERROR(Pad(align));
      m.file_offset = offset_;
      if (s->compressed) {
        VMSNAP_RETURN_IF_ERROR(file_->Append(s->frame.get(), s->frame_len));
        m.stored_length = s->frame_len;
      } else if (s->raw_contig != nullptr) {
        VMSNAP_RETURN_IF_ERROR(file_->Append(s->raw_contig, m.raw_length));
        m.stored_length = m.raw_length;
      } else {
        // Runs of stored pages straight from guest memory: no copy.
        uint32_t i = 0;
        while (i < s->pages) {
          if (!Bit(s->present.data(), i)) {
            ++i;
            continue;
          }
          uint32_t j = i;
          while (j < s->pages && Bit(s->present.data(), j)) ++j;
          VMSNAP_RETURN_IF_ERROR(file_->Append(s->data + size_t(i) * ps, size_t(j - i) * ps));
          i = j;
        }
        m.stored_length = m.raw_length;
      }
      offset_ += m.stored_length;
    }
    chunks_.push_back(std::move(m));
    return Status::Ok();
  }

  void IoLoop() {
    if (opts_.adaptive) {
      std::lock_guard<std::mutex> lk(mu_);
      writer_cpu_ns_ = ThreadCpuNs();
    }
    for (;;) {
      Slot* s;
      {
        std::unique_lock<std::mutex> lk(mu_);
        // Waiting for a chunk a worker has (or has yet to take) is time the
        // workers cost the save; waiting for the caller to add memory is not.
        const bool starved = opts_.adaptive && ring_[next_write_ % ring_.size()] == nullptr &&
                             next_write_ < submitted_;
        const uint64_t w0 = starved ? NowNs() : 0;
        cv_done_.wait(lk, [&] {
          return ring_[next_write_ % ring_.size()] != nullptr ||
                 ((finishing_ || stop_) && next_write_ == submitted_) ||
                 (stop_ && (!error_.ok() || abandon_));
        });
        if (starved) writer_starved_ns_ += NowNs() - w0;
        if (abandon_) return;
        s = ring_[next_write_ % ring_.size()];
        if (s == nullptr) return;
        ring_[next_write_ % ring_.size()] = nullptr;
        ++next_write_;
      }
      bool failed;
      {
        std::lock_guard<std::mutex> lk(mu_);
        failed = !error_.ok();
      }
      const uint64_t t0 = opts_.adaptive ? NowNs() : 0;
      Status st = failed ? Status::Ok() : WriteChunk(s);
      uint64_t done = 0, total = 0;
      {
        const uint64_t t1 = opts_.adaptive ? NowNs() : 0;
        std::lock_guard<std::mutex> lk(mu_);
        if (opts_.adaptive) {
          writer_busy_ns_ += t1 - t0;
          AdaptLocked(t1);
        }
        if (!st.ok() && error_.ok()) error_ = st;
        done_bytes_ += uint64_t(s->pages) * opts_.page_size;
        done = done_bytes_;
        total = opts_.progress_total ? opts_.progress_total : added_bytes_;
        free_.push_back(s);
        cv_free_.notify_all();
        cv_done_.notify_all();
      }
      if (opts_.progress && !failed && st.ok()) opts_.progress(done, std::max(done, total));
    }
  }

  void StopThreads() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      cv_work_.notify_all();
      cv_done_.notify_all();
      cv_free_.notify_all();
    }
    for (auto& t : workers_) {
      if (t.joinable()) t.join();
    }
    workers_.clear();
    if (io_thread_.joinable()) io_thread_.join();
  }

  Status Finish() {
    {
      std::unique_lock<std::mutex> lk(mu_);
      finishing_ = true;
      cv_done_.notify_all();
      cv_done_.wait(lk, [&] { return next_write_ == submitted_ || !error_.ok(); });
    }
    StopThreads();
    {
      std::lock_guard<std::mutex> lk(mu_);
      VMSNAP_RETURN_IF_ERROR(error_);
    }
    const uint64_t ps = opts_.page_size;
    auto mem = manifest_.getMemory();
    if (mem.getPageSize() != 0 && mem.getPageSize() != ps) {
      return Status::InvalidArgument("manifest page size " + std::to_string(mem.getPageSize()) +
                                     " differs from the writer's " + std::to_string(ps));
    }
    mem.setPageSize(uint32_t(ps));
    // Every chunk must lie in one region of the memory map, or no reader will accept it.
    auto regions = mem.getRegions();
    size_t r = 0;
    for (const ChunkMeta& c : chunks_) {
      const uint64_t end = c.gpa + uint64_t(c.pages) * ps;
      while (r < regions.size() &&
             regions[r].getGuestPhysAddr() + regions[r].getSize() <= c.gpa) {
        ++r;
      }
      if (r == regions.size() || regions[r].getGuestPhysAddr() > c.gpa ||
          regions[r].getGuestPhysAddr() + regions[r].getSize() < end) {
        return Status::InvalidArgument("memory " + Hex(c.gpa) + "-" + Hex(end - 1) +
                                       " lies outside every region of the memory map "
                                       "(regions must be sorted and cover all added memory)");
      }
    }
    if (manifest_.getArch() == schema::Arch::AARCH64 && opts_.format_minor < layout::kMinorAarch64) {
      return Status::InvalidArgument("an aarch64 snapshot needs format 1." +
                                     std::to_string(layout::kMinorAarch64) +
                                     " (WriterOptions::format_minor is " +
                                     std::to_string(opts_.format_minor) + ")");
    }
    manifest_.setFormatMajor(layout::kMajor);
    manifest_.setFormatMinor(opts_.format_minor);
    auto list = manifest_.initChunks(unsigned(chunks_.size()));
    for (size_t i = 0; i < chunks_.size(); ++i) {
      const ChunkMeta& c = chunks_[i];
      auto b = list[unsigned(i)];
      b.setGuestPhysAddr(c.gpa);
      b.setPageCount(c.pages);
      b.setPresentBitmap(kj::arrayPtr(c.present.data(), c.present.size()));
      b.setFileOffset(c.file_offset);
      b.setStoredLength(c.stored_length);
      b.setRawLength(c.raw_length);
      b.setCompression(c.compressed ? schema::Compression::ZSTD : schema::Compression::NONE);
      b.setChecksum(c.checksum);
      b.setRawChecksum(c.raw_checksum);
      if (!c.defined.empty()) b.setDefinedBitmap(kj::arrayPtr(c.defined.data(), c.defined.size()));
    }
    kj::Array<capnp::word> words = capnp::messageToFlatArray(*message_);
    auto bytes = words.asBytes();
    VMSNAP_RETURN_IF_ERROR(Pad(layout::kManifestAlign));
    layout::Footer f;
    f.manifest_offset = offset_;
    f.manifest_length = bytes.size();
    f.manifest_checksum = layout::Checksum(bytes.begin(), bytes.size());
    VMSNAP_RETURN_IF_ERROR(file_->Append(bytes.begin(), bytes.size()));
    offset_ += bytes.size();
    uint8_t foot[layout::kFooterSize];
    layout::EncodeFooter(f, foot);
    VMSNAP_RETURN_IF_ERROR(file_->Append(foot, sizeof foot));
    offset_ += sizeof foot;
    // The file is in place once Commit() gets past the rename; a failing
    // directory sync does not undo that, so the id is set either way.
    id_ = layout::ComputeId({bytes.begin(), bytes.size()});
    file_size_ = offset_;
    Status s = file_->Commit();
    committed_ = file_->committed();
    return s;
  }

  const WriterOptions opts_;
  std::unique_ptr<OutputFile> file_;
  // Held by pointer: its destructor may throw (kj), which an override of a
  // noexcept destructor must not allow.
  std::unique_ptr<capnp::MallocMessageBuilder> message_ = std::make_unique<capnp::MallocMessageBuilder>();
  schema::Manifest::Builder manifest_{nullptr};
  unsigned workers_n_ = 1;

  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_, cv_free_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_;
  std::deque<Slot*> pending_;
  std::vector<Slot*> ring_;  // finished chunks, by seq % size, waiting for the I/O thread
  uint64_t submitted_ = 0;
  uint64_t next_write_ = 0;
  bool stop_ = false;
  bool finishing_ = false;
  bool abandon_ = false;
  Status error_;
  uint64_t done_bytes_ = 0;
  uint64_t added_bytes_ = 0;
  // Adaptive codec (under mu_).
  static constexpr uint64_t kWindowNs = 10'000'000;
  static constexpr double kEffortUp = 0.1, kEffortDown = 0.3;
  static constexpr double kSaturated = 0.85;         // of every core's time, used by this process
  static constexpr double kMachineSaturated = 0.90;  // of every core's time, used by anything
  static constexpr double kStarved = 0.10;     // of the time, the writer waited for the workers
  static constexpr double kDiskBound = 0.3;    // of the time, the writer waited in a write
  static constexpr double kWriterIdle = 0.3;   // of the time, the writer had something to write
  std::vector<int> ladder_;  // 0: raw, then zstd levels
  double effort_ = 0;        // starts raw: compression has to show it costs no time
  double dither_ = 0;
  uint64_t owed_ = 0;  // chunks chosen for compression that turned out random
  unsigned ncpu_ = 1;
  uint64_t window_start_ns_ = 0, window_cpu_ns_ = 0, writer_starved_ns_ = 0;
  uint64_t writer_busy_ns_ = 0;  // writing, in this stretch
  uint64_t writer_cpu_ns_ = 0;   // the I/O thread's CPU time at its start
  static constexpr uint64_t kStatNs = 50'000'000;
  uint64_t stat_total_ = 0, stat_idle_ = 0, stat_ns_ = 0;  // /proc/stat at the last look
  double machine_busy_ = 0;
  std::vector<std::thread> workers_;
  std::thread io_thread_;

  // Owned by the I/O thread while it runs, by Commit() after.
  uint64_t offset_ = 0;
  std::vector<ChunkMeta> chunks_;

  // Caller thread only.
  bool have_last_ = false;
  uint64_t last_end_ = 0;
  bool committed_ = false;
  layout::SnapshotId id_{};
  uint64_t file_size_ = 0;
};

}  // namespace

Result<std::unique_ptr<SnapshotWriter>> SnapshotWriter::Create(const std::string& path,
                                                               const WriterOptions& given) {
  WriterOptions options = given;
  const uint32_t ps = options.page_size;
  // The default chunk is 256 pages; with large pages it would pass the
  // format's byte limit, so it shrinks to fit rather than fail.
  if (options.chunk_pages == WriterOptions{}.chunk_pages && ps != 0 &&
      uint64_t(options.chunk_pages) * ps > layout::kMaxChunkBytes) {
    options.chunk_pages = uint32_t(std::max<uint64_t>(1, layout::kMaxChunkBytes / ps));
  }
  if (ps < layout::kMinPageSize || ps > layout::kMaxPageSize || (ps & (ps - 1)) != 0) {
    return Status::InvalidArgument("page size " + std::to_string(ps) +
                                   " is not a power of two in [4096, 1 MiB]");
  }
  if (options.chunk_pages == 0 || options.chunk_pages > layout::kMaxChunkPages ||
      uint64_t(options.chunk_pages) * ps > layout::kMaxChunkBytes) {
    return Status::InvalidArgument("chunk of " + std::to_string(options.chunk_pages) +
                                   " pages exceeds the format's limits (" +
                                   std::to_string(layout::kMaxChunkPages) + " pages, " +
                                   std::to_string(layout::kMaxChunkBytes) + " bytes)");
  }
  if (options.compression != schema::Compression::ZSTD &&
      options.compression != schema::Compression::NONE) {
    return Status::InvalidArgument("unknown compression");
  }
  if (options.compression != schema::Compression::ZSTD) options.adaptive = false;
  if (options.zstd_level < ZSTD_minCLevel() || options.zstd_level > ZSTD_maxCLevel()) {
    return Status::InvalidArgument("zstd level " + std::to_string(options.zstd_level) +
                                   " out of range");
  }
  OutputOptions oo;
  oo.env = options.env;
  oo.inputs = options.inputs;
  oo.what = "snapshot";
  VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<OutputFile> file, OutputFile::Create(path, oo));
  auto w = std::make_unique<WriterImpl>(options, std::move(file));
  VMSNAP_RETURN_IF_ERROR(w->Start());
  return std::unique_ptr<SnapshotWriter>(std::move(w));
}

}  // namespace vmsnap
