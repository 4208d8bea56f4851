// SPDX-License-Identifier: MIT
// Pulling a snapshot into local files (see pull.h).
#include "store/pull.h"

#include <sys/stat.h>

#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "base/hex.h"
#include "format/chain.h"
#include "format/output.h"
#include "format/reader.h"
#include "store/chain_links.h"
#include "store/fetch.h"
#include "store/layout_object.h"

namespace vmsnap::store {
namespace {

Result<PullStats> PullLayout(ObjectStore& store, const std::string& name, std::span<const uint8_t> raw,
                             const std::string& out_path, unsigned parallel, const ProgressFn& progress) {
  VMSNAP_ASSIGN_OR_RETURN(Layout l, DecodeLayout(raw, store.where() + "/" + name));
  OutputOptions oo;
  oo.what = "snapshot";
  VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<OutputFile> out, OutputFile::Create(out_path, oo));

  // Chunks are fetched `window` ahead by the workers and written in file
  // order. Chunk i lands in buffer i % window, which chunk i - window has
  // left by then (a worker starts chunk i only once chunk i - window is
  // written): the buffers are allocated once, not per chunk.
  const size_t n = l.chunks.size();
  const size_t window = std::max<size_t>(parallel * 2, 4);
  uint64_t longest = 0;
  for (const LayoutChunk& e : l.chunks) longest = std::max(longest, e.length);
  std::vector<std::unique_ptr<uint8_t[]>> buffers(std::min(window, n));
  for (auto& b : buffers) b.reset(new uint8_t[longest + 1]);
  std::vector<std::optional<Status>> slots(n);
  std::mutex mu;
  std::condition_variable cv;
  size_t next = 0, written = 0;
  bool stop = false;
  auto worker = [&] {
    for (;;) {
      size_t i;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stop || next >= n || next < written + window; });
        if (stop || next >= n) return;
        i = next++;
      }
      const LayoutChunk& e = l.chunks[i];
      Status r = FetchChunk(store, name, e, buffers[i % window].get());
      std::lock_guard<std::mutex> lk(mu);
      slots[i] = std::move(r);
      cv.notify_all();
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < std::max(1u, parallel); ++t) pool.emplace_back(worker);
  Status status = Status::Ok();
  uint64_t gap_at = 0, file_at = 0;
  for (size_t i = 0; i <= n && status.ok(); ++i) {
    // The gap before chunk i (or the tail after the last chunk).
    const uint64_t gap_end = i < n ? l.chunks[i].offset : l.file_size;
    const uint64_t gap = gap_end - file_at;
    status = out->Append(l.gaps.data() + gap_at, gap);
    gap_at += gap;
    file_at = gap_end;
    if (i == n || !status.ok()) break;
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return slots[i].has_value(); });
      status = std::move(*slots[i]);
      slots[i].reset();
    }
    if (!status.ok()) break;
    status = out->Append(buffers[i % window].get(), l.chunks[i].length);
    file_at += l.chunks[i].length;
    {
      std::lock_guard<std::mutex> lk(mu);
      written = i + 1;  // its buffer is free for chunk i + window
      cv.notify_all();
    }
    if (progress) progress(file_at, l.file_size);
  }
  {
    std::lock_guard<std::mutex> lk(mu);
    stop = true;
    cv.notify_all();
  }
  for (auto& t : pool) t.join();
  VMSNAP_RETURN_IF_ERROR(status);
  VMSNAP_RETURN_IF_ERROR(out->Commit());
  PullStats st;
  st.chunks = n;
  st.file_bytes = l.file_size;
  return st;
}

}  // namespace

Result<PullStats> Pull(ObjectStore& store, const std::string& name, const std::string& out_path,
                       unsigned parallel, const ProgressFn& progress) {
  // Every layer's id is checked before anything is written.
  VMSNAP_ASSIGN_OR_RETURN(std::vector<StoredLayer> chain, FetchChain(store, name));
  VMSNAP_ASSIGN_OR_RETURN(PullStats st, PullLayout(store, name, chain.back().raw, out_path, parallel, progress));
  std::string child = out_path;
  for (size_t k = chain.size() - 1; k-- > 0;) {
    // Where the layer above looks for it.
    VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotReader> r, SnapshotReader::Open(child));
    const std::string target = ParentPathOf(child, r->manifest().getParent().getPath().cStr());
    struct stat fs {};
    if (::stat(target.c_str(), &fs) == 0) {
      auto there = SnapshotReader::Open(target);
      if (!there.ok() || (*there)->id() != chain[k].layout.id) {
        return Status::InvalidArgument(target + ": exists and is not " + store.where() + "/" + chain[k].name +
                                       ", the parent " + child + " names (id " + layout::IdToHex(chain[k].layout.id) +
                                       "); not overwritten");
      }
      st.parents_kept.push_back(target);
    } else {
      VMSNAP_RETURN_IF_ERROR(PullLayout(store, chain[k].name, chain[k].raw, target, parallel, progress).status());
      st.parents_written.push_back(target);
    }
    child = target;
  }
  return st;
}

Result<std::string> PullCached(ObjectStore& store, const std::string& name, const std::string& cache_dir,
                               const ProgressFn& progress) {
  VMSNAP_ASSIGN_OR_RETURN(std::vector<StoredLayer> chain, FetchChain(store, name));
  std::vector<std::unique_ptr<SnapshotReader>> files;
  std::vector<const SnapshotReader*> readers;
  for (const StoredLayer& layer : chain) {
    // Named by the layout's own hash: a snapshot pushed again under the
    // same name with other contents gets another file.
    const std::string path = cache_dir + "/" + BytesHex(layer.layout.sha) + ".vmsnap";
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || uint64_t(st.st_size) != layer.layout.file_size) {
      VMSNAP_RETURN_IF_ERROR(PullLayout(store, layer.name, layer.raw, path, 16, progress).status());
    }
    if (chain.size() == 1) return path;
    VMSNAP_ASSIGN_OR_RETURN(files.emplace_back(), SnapshotReader::Open(path));
    readers.push_back(files.back().get());
  }
  VMSNAP_ASSIGN_OR_RETURN(LinkedChain linked, LinkChain(cache_dir, readers));
  return linked.leaf;
}

}  // namespace vmsnap::store
