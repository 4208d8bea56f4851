// SPDX-License-Identifier: MIT
// The on-demand local copy of a stored snapshot (lazy_cache.h): cache files,
// the record of chunks present, and the fetch workers that serve the memory
// loader's requests first and prefetch the rest.
#include "store/lazy_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "base/cache_dir.h"
#include "base/fd.h"
#include "base/hex.h"
#include "format/reader.h"

namespace vmsnap::store {
namespace {

// The cache directory's folder of name records (LazyChain::RecordPath).
constexpr char kNameRecords[] = "names";

// Per layout entry, in this process.
enum State : uint8_t {
  kMissing,   // not in the file (as far as this process knows)
  kRecorded,  // the record says it is in; not checked by this process yet
  kQueued,    // asked for; waiting for a worker
  kBusy,      // a worker is fetching or checking it
  kPresent,   // in the file and checked
  kFailed,    // the store failed it; the error is kept
};

Status WriteAll(int fd, const uint8_t* p, uint64_t n, uint64_t off, const std::string& what) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, off_t(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "write " + what);
    }
    p += w;
    n -= uint64_t(w);
    off += uint64_t(w);
  }
  return Status::Ok();
}

Status MakeDirs(const std::string& dir) {
  std::string at;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || (dir[i] == '/' && i > 0)) {
      at = dir.substr(0, i);
      if (::mkdir(at.c_str(), 0700) != 0 && errno != EEXIST) return Status::FromErrno(errno, "create " + at);
    }
  }
  return Status::Ok();
}

uint64_t BlocksOf(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? uint64_t(st.st_blocks) * 512 : 0;
}

// Whether the cache holds an entry `base` for `layout` (its file and its
// record, of the right sizes) that Open may reuse.
bool HasEntry(const std::string& base, const SnapshotLayout& layout) {
  struct stat fs {}, rs {};
  return ::stat((base + ".vmsnap").c_str(), &fs) == 0 && uint64_t(fs.st_size) == layout.file_size &&
         ::stat((base + ".chunks").c_str(), &rs) == 0 && uint64_t(rs.st_size) == layout.chunks.size();
}

// The room a new entry for `layout` takes: the file and its record.
uint64_t EntryBytes(const SnapshotLayout& layout) { return layout.file_size + layout.chunks.size(); }

// Files the cache counts, and may remove: a cache file with its record of
// chunks (named by the entry's path without extension), or a name's record.
struct Cached {
  struct timespec used;  // the record's time: its last use
  std::string key;       // the entry's path without extension, or the name record's path
  uint64_t bytes;        // disk blocks, all its files
  bool entry;
};

// Makes room in `dir` for `need` more bytes under `max_bytes`, removing the
// least recently used cache files and name records (never those `keep`
// names by key); true when they fit. Nothing is removed unless removing
// every removable file would make room: what cannot fit even in an empty
// cache leaves the cache as it was.
bool MakeRoom(const std::string& dir, uint64_t max_bytes, uint64_t need, const std::vector<std::string>& keep) {
  std::vector<Cached> others;
  uint64_t in_use = 0;
  auto kept = [&keep](const std::string& key) { return std::find(keep.begin(), keep.end(), key) != keep.end(); };
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* ent = ::readdir(d)) {
      const std::string f = ent->d_name;
      const size_t dot = f.rfind('.');
      if (dot == std::string::npos) continue;
      const std::string stem = dir + "/" + f.substr(0, dot), ext = f.substr(dot);
      if (ext != ".vmsnap" && ext != ".chunks") continue;
      struct stat st {};
      if (::stat((dir + "/" + f).c_str(), &st) != 0) continue;
      in_use += uint64_t(st.st_blocks) * 512;
      // An entry is its record (whose mtime says when it was last used)
      // and its file.
      if (ext == ".chunks" && !kept(stem)) {
        others.push_back({st.st_mtim, stem, uint64_t(st.st_blocks) * 512 + BlocksOf(stem + ".vmsnap"), true});
      }
    }
    ::closedir(d);
  }
  const std::string names = dir + "/" + kNameRecords;
  if (DIR* d = ::opendir(names.c_str())) {
    while (dirent* ent = ::readdir(d)) {
      const std::string path = names + "/" + ent->d_name;
      struct stat st {};
      if (ent->d_name[0] == '.' || ::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      in_use += uint64_t(st.st_blocks) * 512;
      if (!kept(path)) others.push_back({st.st_mtim, path, uint64_t(st.st_blocks) * 512, false});
    }
    ::closedir(d);
  }
  std::sort(others.begin(), others.end(), [](const Cached& a, const Cached& b) {
    return a.used.tv_sec != b.used.tv_sec ? a.used.tv_sec < b.used.tv_sec : a.used.tv_nsec < b.used.tv_nsec;
  });
  uint64_t evictable = 0;
  for (const Cached& c : others) evictable += c.bytes;
  if (in_use - std::min(in_use, evictable) + need > max_bytes) return false;
  bool evicted = false;
  for (const Cached& c : others) {
    if (in_use + need <= max_bytes) break;
    // Another load may still use it: it keeps its open file; the name goes.
    if (c.entry) {
      ::unlink((c.key + ".chunks").c_str());
      ::unlink((c.key + ".vmsnap").c_str());
      evicted = true;
    } else {
      ::unlink(c.key.c_str());
    }
    in_use -= std::min(in_use, c.bytes);
  }
  // Chains that linked an entry removed (here or by an earlier load).
  if (evicted) RemoveDeadChains(dir);
  return true;
}

}  // namespace

struct LazySnapshot::Impl {
  std::shared_ptr<ObjectStore> store;
  std::string name;
  LazyCacheOptions opts;
  SnapshotLayout layout;
  std::string path, record_path;
  bool kept = true;
  UniqueFd fd, rec_fd;
  std::unique_ptr<SnapshotReader> reader;
  std::vector<long> entry_of;  // manifest chunk -> layout entry (-1: stores nothing)
  std::vector<size_t> chunk_of;  // layout entry -> manifest chunk

  mutable std::mutex mu;
  std::condition_variable work_cv, done_cv;
  std::vector<uint8_t> state;
  std::map<size_t, Status> errors;
  std::deque<size_t> urgent, hints;
  size_t sweep = 0;
  bool prefetch = false;
  bool stopping = false;
  std::vector<std::thread> workers;
  unsigned running = 0;  // workers not yet returned
  LazyCacheStats st;

  std::string Where(size_t e) const {
    return store->where() + "/" + ChunkObject(layout.chunks[e].sha.data()) + " (chunk " +
           std::to_string(chunk_of[e]) + " of " + name + ")";
  }

  // Whether the chunk's bytes in the file match the manifest's checksum.
  bool CheckInFile(size_t e) const { return reader->StoredBytes(chunk_of[e]).ok(); }

  // Brings entry e (claimed: kBusy) into the file through `buf` (room for
  // the longest chunk and one byte more); returns its new state.
  State Bring(size_t e, bool recorded, uint8_t* buf, Status* error) {
    if (recorded && CheckInFile(e)) return kPresent;
    const LayoutChunk& c = layout.chunks[e];
    Status got = FetchChunk(*store, name, c, buf);
    if (!got.ok()) {
      *error = got;
      return kFailed;
    }
    // Only bytes that matched their name ever reach the file; the record
    // follows the bytes, and is checked against them before any use.
    Status w = WriteAll(fd.get(), buf, c.length, c.offset, path);
    if (w.ok() && rec_fd.valid()) {
      const uint8_t one = 1;
      w = WriteAll(rec_fd.get(), &one, 1, e, record_path);
    }
    if (!w.ok()) {
      *error = w;
      return kFailed;
    }
    std::lock_guard<std::mutex> lock(mu);
    st.fetched_chunks += 1;
    st.fetched_bytes += c.length;
    return kPresent;
  }

  void Worker() {
    // One buffer per worker for all its chunks: a fresh one per chunk cost
    // an allocation, its page faults and a zero fill each time.
    uint64_t longest = 0;
    for (const LayoutChunk& c : layout.chunks) longest = std::max(longest, c.length);
    std::unique_ptr<uint8_t[]> buf;
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      size_t e = SIZE_MAX;
      while (e == SIZE_MAX) {
        if (stopping) {
          --running;
          done_cv.notify_all();
          return;
        }
        if (!urgent.empty()) {
          const size_t c = urgent.front();
          urgent.pop_front();
          if (state[c] == kQueued) e = c;
        } else if (!hints.empty()) {
          const size_t c = hints.front();
          hints.pop_front();
          if (state[c] == kMissing || state[c] == kRecorded) e = c;
        } else if (prefetch && sweep < state.size()) {
          const size_t c = sweep++;
          if (state[c] == kMissing || state[c] == kRecorded) e = c;
        } else {
          work_cv.wait(lock);
        }
      }
      const bool recorded = state[e] == kRecorded;
      state[e] = kBusy;
      lock.unlock();
      if (!buf) buf.reset(new uint8_t[longest + 1]);
      Status error;
      const State now = Bring(e, recorded, buf.get(), &error);
      lock.lock();
      state[e] = now;
      if (now == kFailed) errors[e] = error;
      done_cv.notify_all();
    }
  }
};

LazySnapshot::LazySnapshot(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

LazySnapshot::~LazySnapshot() {
  std::unique_lock<std::mutex> lock(impl_->mu);
  impl_->stopping = true;
  impl_->work_cv.notify_all();
  const bool ended = impl_->done_cv.wait_for(lock, std::chrono::seconds(2), [&] { return impl_->running == 0; });
  lock.unlock();
  for (auto& t : impl_->workers) {
    if (ended) {
      t.join();
    } else {
      t.detach();
    }
  }
}

Result<std::unique_ptr<LazySnapshot>> LazySnapshot::Open(std::shared_ptr<ObjectStore> store, const std::string& name,
                                                         SnapshotLayout layout, const LazyCacheOptions& options,
                                                         bool keep_new) {
  auto impl = std::make_shared<Impl>();
  Impl& m = *impl;
  m.store = std::move(store);
  m.name = name;
  m.opts = options;
  m.layout = std::move(layout);
  VMSNAP_RETURN_IF_ERROR(MakeDirs(options.dir));
  const size_t n = m.layout.chunks.size();
  const std::string base = options.dir + "/" + BytesHex(m.layout.sha);
  m.path = base + ".vmsnap";
  m.record_path = base + ".chunks";

  // A cache file of this content that opens as a snapshot is reused.
  bool reuse = HasEntry(base, m.layout);
  if (reuse) {
    m.fd.Reset(::open(m.path.c_str(), O_RDWR | O_CLOEXEC));
    m.rec_fd.Reset(::open(m.record_path.c_str(), O_RDWR | O_CLOEXEC));
    reuse = m.fd.valid() && m.rec_fd.valid();
    if (reuse) {
      auto r = SnapshotReader::Open(m.path);
      reuse = r.ok();
      if (reuse) m.reader = std::move(r).value();
    }
    // The record's time is the entry's last use, for eviction.
    if (reuse) (void)::utimensat(AT_FDCWD, m.record_path.c_str(), nullptr, 0);
  }
  if (!reuse) {
    if (options.only_cached) return Status::NotFound(m.path + ": not usable from the cache");
    m.fd.Reset();
    m.rec_fd.Reset();
    m.kept = keep_new;
    const std::string tmp = base + "." + std::to_string(::getpid()) + ".tmp";
    if (!m.kept) m.path = tmp + ".vmsnap";
    const std::string file_tmp = m.kept ? tmp : m.path;
    m.fd.Reset(::open(file_tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!m.fd.valid()) return Status::FromErrno(errno, "create " + file_tmp);
    auto fail = [&](const Status& s) {
      ::unlink(file_tmp.c_str());
      return s;
    };
    if (::ftruncate(m.fd.get(), off_t(m.layout.file_size)) != 0) {
      return fail(Status::FromErrno(errno, "size " + file_tmp));
    }
    // Every byte but the chunks: header, manifest, footer, padding.
    uint64_t gap_at = 0, file_at = 0;
    for (size_t i = 0; i <= n; ++i) {
      const uint64_t end = i < n ? m.layout.chunks[i].offset : m.layout.file_size;
      Status s = WriteAll(m.fd.get(), m.layout.gaps.data() + gap_at, end - file_at, file_at, file_tmp);
      if (!s.ok()) return fail(s);
      gap_at += end - file_at;
      file_at = end + (i < n ? m.layout.chunks[i].length : 0);
    }
    if (m.kept) {
      const std::string rec_tmp = tmp + ".chunks";
      m.rec_fd.Reset(::open(rec_tmp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
      if (!m.rec_fd.valid()) return fail(Status::FromErrno(errno, "create " + rec_tmp));
      if (::ftruncate(m.rec_fd.get(), off_t(n)) != 0 || ::rename(rec_tmp.c_str(), m.record_path.c_str()) != 0 ||
          ::rename(file_tmp.c_str(), m.path.c_str()) != 0) {
        const Status s = Status::FromErrno(errno, "create " + m.path);
        ::unlink(rec_tmp.c_str());
        return fail(s);
      }
    }
    auto r = SnapshotReader::Open(m.path);
    if (!r.ok()) return r.status().Context(m.store->where() + "/" + name);
    m.reader = std::move(r).value();
  }
  // Chunks of the manifest and entries of the layout meet at file offsets.
  std::map<uint64_t, size_t> at;
  for (size_t e = 0; e < n; ++e) at[m.layout.chunks[e].offset] = e;
  const auto& index = m.reader->chunk_index();
  m.entry_of.assign(index.size(), -1);
  m.chunk_of.assign(n, SIZE_MAX);
  for (size_t i = 0; i < index.size(); ++i) {
    if (index[i].stored_length == 0) continue;
    auto it = at.find(index[i].file_offset);
    if (it == at.end() || m.layout.chunks[it->second].length != index[i].stored_length) {
      return Status::Corruption(m.store->where() + "/" + name + ": the layout has no object for chunk " +
                                std::to_string(i));
    }
    m.entry_of[i] = long(it->second);
    m.chunk_of[it->second] = i;
  }
  for (size_t e = 0; e < n; ++e) {
    if (m.chunk_of[e] == SIZE_MAX) {
      return Status::Corruption(m.store->where() + "/" + name + ": layout entry " + std::to_string(e) +
                                " is no chunk of the manifest");
    }
  }
  m.state.assign(n, kMissing);
  if (m.rec_fd.valid() && n > 0) {
    std::vector<uint8_t> rec(n);
    if (::pread(m.rec_fd.get(), rec.data(), n, 0) == ssize_t(n)) {
      for (size_t e = 0; e < n; ++e) {
        if (rec[e] == 1) {
          m.state[e] = kRecorded;
          ++m.st.cached_at_open;
        }
      }
    }
  }
  m.st.chunks = n;
  const unsigned n_workers = std::max(1u, options.parallel);
  m.running = n_workers;
  for (unsigned t = 0; t < n_workers; ++t) m.workers.emplace_back([impl] { impl->Worker(); });
  return std::unique_ptr<LazySnapshot>(new LazySnapshot(std::move(impl)));
}

const std::string& LazySnapshot::path() const { return impl_->path; }
const SnapshotReader& LazySnapshot::reader() const { return *impl_->reader; }
bool LazySnapshot::kept() const { return impl_->kept; }
void LazySnapshot::Discard() {
  if (!impl_->kept) ::unlink(impl_->path.c_str());
}

Status LazySnapshot::Fetch(size_t index) {
  Impl& m = *impl_;
  if (index >= m.entry_of.size() || m.entry_of[index] < 0) return Status::Ok();
  const size_t e = size_t(m.entry_of[index]);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(m.opts.timeout_s);
  std::unique_lock<std::mutex> lock(m.mu);
  for (;;) {
    switch (m.state[e]) {
      case kPresent:
        return Status::Ok();
      case kFailed:
        return m.errors[e];
      case kRecorded:
        // Cached: checked here, no worker needed.
        m.state[e] = kBusy;
        lock.unlock();
        if (m.CheckInFile(e)) {
          lock.lock();
          m.state[e] = kPresent;
          m.done_cv.notify_all();
          return Status::Ok();
        }
        lock.lock();
        m.state[e] = kMissing;
        [[fallthrough]];
      case kMissing:
        m.state[e] = kQueued;
        m.urgent.push_back(e);
        // The guest is likely to want what follows next.
        for (size_t k = std::min(e + 4, m.state.size() - 1); k > e; --k) m.hints.push_front(k);
        while (m.hints.size() > 64) m.hints.pop_back();
        m.work_cv.notify_all();
        break;
      case kQueued:
      case kBusy:
        if (m.done_cv.wait_until(lock, deadline) == std::cv_status::timeout && m.state[e] != kPresent &&
            m.state[e] != kFailed) {
          return Status::Io(m.Where(e) + ": the store did not deliver it within " +
                            std::to_string(m.opts.timeout_s) + " s");
        }
        break;
    }
  }
}

void LazySnapshot::StartPrefetch() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->prefetch = true;
  }
  impl_->work_cv.notify_all();
}

Status LazySnapshot::FetchAll() {
  StartPrefetch();
  for (size_t i = 0; i < impl_->entry_of.size(); ++i) VMSNAP_RETURN_IF_ERROR(Fetch(i));
  return Status::Ok();
}

LazyCacheStats LazySnapshot::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->st;
}

Result<std::unique_ptr<LazyChain>> LazyChain::Open(std::unique_ptr<ObjectStore> store, const std::string& name,
                                                   const LazyCacheOptions& options) {
  VMSNAP_ASSIGN_OR_RETURN(std::vector<StoredLayer> layers, FetchChain(*store, name));
  std::shared_ptr<ObjectStore> shared(std::move(store));
  auto chain = std::unique_ptr<LazyChain>(new LazyChain());
  chain->dir_ = options.dir;
  chain->max_bytes_ = options.max_bytes;
  // The cache's limit holds for the chain as a whole: room for every layer
  // the cache lacks is made at once, never removing a layer of the chain,
  // and the new layers are all kept or none.
  uint64_t lacking = 0;
  for (const StoredLayer& l : layers) {
    chain->bases_.push_back(options.dir + "/" + BytesHex(l.layout.sha));
    chain->entry_bytes_.push_back(EntryBytes(l.layout));
    if (!HasEntry(chain->bases_.back(), l.layout)) lacking += EntryBytes(l.layout);
  }
  if (options.only_cached && lacking > 0) {
    return Status::NotFound(shared->where() + "/" + name + ": not in the cache " + options.dir);
  }
  const bool keep_new = lacking == 0 || MakeRoom(options.dir, options.max_bytes, lacking, chain->bases_);
  std::vector<const SnapshotReader*> readers;
  for (StoredLayer& l : layers) {
    VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<LazySnapshot> s,
                            LazySnapshot::Open(shared, l.name, std::move(l.layout), options, keep_new));
    readers.push_back(&s->reader());
    chain->layers_.push_back(std::move(s));
  }
  VMSNAP_ASSIGN_OR_RETURN(LinkedChain linked, LinkChain(options.dir, readers));
  chain->path_ = std::move(linked.leaf);
  chain->folder_ = std::move(linked.folder);
  chain->hold_ = std::move(linked.hold);
  return chain;
}

bool LazyChain::kept() const {
  for (const auto& l : layers_) {
    if (!l->kept()) return false;
  }
  return true;
}

void LazyChain::Discard() {
  // The chain is open now: its folder need not stay.
  hold_.Reset();
  for (const auto& l : layers_) l->Discard();
  // A layer not kept had a file (and so a chain folder) for this load alone.
  if (!kept() && !folder_.empty()) RemoveChainFolder(folder_);
}

void LazyChain::KeepRecord(const std::string& path, std::string_view bytes) const {
  const uint64_t had = BlocksOf(path);
  // Disk blocks, as the cache counts them.
  uint64_t need = (bytes.size() + 4095) / 4096 * 4096;
  need -= std::min(need, had);
  // The room made for this chain's layers that their chunks have not filled
  // yet (a lazy load's file is still mostly holes) is not the record's.
  for (size_t i = 0; i < bases_.size(); ++i) {
    const uint64_t now = BlocksOf(bases_[i] + ".vmsnap") + BlocksOf(bases_[i] + ".chunks");
    need += entry_bytes_[i] - std::min(entry_bytes_[i], now);
  }
  std::vector<std::string> keep = bases_;
  keep.push_back(path);
  if (!MakeRoom(dir_, max_bytes_, need, keep)) {
    ::unlink(path.c_str());
    return;
  }
  (void)::mkdir((dir_ + "/" + kNameRecords).c_str(), 0700);
  (void)ReplaceSmallFile(path, bytes);
}

std::string LazyChain::RecordPath(const std::string& dir, const std::string& key) {
  return dir + "/" + kNameRecords + "/" + key;
}

Status LazyChain::Fetch(size_t layer, size_t index) {
  if (layer >= layers_.size()) return Status::Internal("chunk of layer " + std::to_string(layer) + ": no such layer");
  return layers_[layer]->Fetch(index);
}

void LazyChain::StartPrefetch() {
  for (const auto& l : layers_) l->StartPrefetch();
}

Status LazyChain::FetchAll() {
  for (const auto& l : layers_) VMSNAP_RETURN_IF_ERROR(l->FetchAll());
  return Status::Ok();
}

LazyCacheStats LazyChain::stats() const {
  LazyCacheStats sum;
  for (const auto& l : layers_) {
    const LazyCacheStats s = l->stats();
    sum.chunks += s.chunks;
    sum.cached_at_open += s.cached_at_open;
    sum.fetched_chunks += s.fetched_chunks;
    sum.fetched_bytes += s.fetched_bytes;
  }
  return sum;
}

}  // namespace vmsnap::store
