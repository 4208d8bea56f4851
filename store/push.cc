// SPDX-License-Identifier: MIT
// Pushing a snapshot file into the store (see push.h).
#include "store/push.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "base/fd.h"
#include "base/mapping.h"
#include "base/parallel.h"
#include "format/chain.h"
#include "format/reader.h"
#include "store/fetch.h"
#include "store/layout_object.h"
#include "store/sha256.h"

namespace vmsnap::store {

std::string DefaultParentName(const std::string& child_name, const std::string& recorded_parent_path) {
  const size_t slash = child_name.rfind('/');
  const std::string folder = slash == std::string::npos ? "" : child_name.substr(0, slash + 1);
  std::string file = recorded_parent_path.substr(recorded_parent_path.rfind('/') + 1);
  constexpr std::string_view kExt = ".vmsnap";
  if (file.size() > kExt.size() && file.compare(file.size() - kExt.size(), kExt.size(), kExt) == 0) {
    file.resize(file.size() - kExt.size());
  }
  if (file.empty() || file == "." || file == "..") return "";
  return folder + file;
}

void PushStats::AddParents(const PushStats& parents) {
  chunks += parents.chunks;
  uploaded_chunks += parents.uploaded_chunks;
  uploaded_bytes += parents.uploaded_bytes;
  present_chunks += parents.present_chunks;
  present_bytes += parents.present_bytes;
  pushed_parents.insert(pushed_parents.begin(), parents.pushed_parents.begin(), parents.pushed_parents.end());
}

namespace {

// An incremental snapshot's parent in the store: found there with the id
// the child's manifest records, or pushed now from the file the manifest
// names. Sets the layout's parent; returns what pushing the parent did.
Result<PushStats> SettleParent(const SnapshotReader& child, const std::string& path, ObjectStore& store,
                               const std::string& name, const PushOptions& options, Layout& l) {
  auto ref = child.manifest().getParent();
  auto idb = ref.getSnapshotId();  // 16 bytes: the reader checked
  std::memcpy(l.parent_id.data(), idb.begin(), l.parent_id.size());
  const std::string recorded = ref.getPath().cStr();
  l.parent = options.parent_name.empty() ? DefaultParentName(name, recorded) : options.parent_name;
  const std::string at = store.where() + "/";
  if (l.parent.empty()) {
    return Status::InvalidArgument(path + ": its parent's file name (" + recorded +
                                   ") gives it no name in the store; name it with --parent-name");
  }
  if (l.parent == name) {
    return Status::InvalidArgument(at + name + ": the snapshot and its parent " + recorded +
                                   " would have the same name; name the parent with --parent-name");
  }
  auto have = FetchLayout(store, l.parent);
  if (have.ok()) {
    if (have->id != l.parent_id) {
      return Status::Corruption(at + l.parent + " holds another snapshot (id " + layout::IdToHex(have->id) +
                                ") than the parent of " + path + " (id " + layout::IdToHex(l.parent_id) +
                                "); push the parent under another name with --parent-name");
    }
    return PushStats{};
  }
  if (have.status().code() != Code::kNotFound) return have.status();
  // The local file must be the parent the child was made on, before
  // anything of it is uploaded.
  auto parent = OpenParent(child);
  if (!parent.ok() && parent.status().code() == Code::kNotFound) {
    return Status::NotFound(at + l.parent + ": no such snapshot, and the " + parent.status().message() +
                            "; push the parent first and name it with --parent-name");
  }
  VMSNAP_RETURN_IF_ERROR(parent.status());
  const std::string ppath = (*parent)->path();
  parent->reset();
  PushOptions po = options;
  po.parent_name.clear();
  VMSNAP_ASSIGN_OR_RETURN(PushStats ps, Push(ppath, store, l.parent, po));
  ps.pushed_parents.push_back(l.parent);
  return ps;
}

}  // namespace

Result<PushStats> Push(const std::string& path, ObjectStore& store, const std::string& name,
                       const PushOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  // Open() checks the header, footer, manifest and chunk index: a damaged
  // file is refused before anything is uploaded.
  VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotReader> reader, SnapshotReader::Open(path));
  // Parents first: a child's layout only ever names a parent that exists.
  Layout l;
  PushStats parents;
  if (reader->manifest().hasParent()) {
    VMSNAP_ASSIGN_OR_RETURN(parents, SettleParent(*reader, path, store, name, options, l));
  }
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno(errno, "open " + path);
  const uint64_t size = reader->file_size();
  VMSNAP_ASSIGN_OR_RETURN(Mapping map, Mapping::Map(size, PROT_READ, MAP_SHARED, fd.get(), 0, "map " + path));

  l.file_size = size;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const ChunkInfo& c : reader->chunk_index()) {
    if (c.stored_length > 0) ranges.emplace_back(c.file_offset, c.stored_length);
  }
  std::sort(ranges.begin(), ranges.end());
  l.chunks.resize(ranges.size());
  uint64_t at = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    l.chunks[i].offset = ranges[i].first;
    l.chunks[i].length = ranges[i].second;
    l.gaps.insert(l.gaps.end(), map.data() + at, map.data() + ranges[i].first);
    at = ranges[i].first + ranges[i].second;
  }
  l.gaps.insert(l.gaps.end(), map.data() + at, map.data() + size);

  PushStats st;
  st.file_bytes = size;
  const std::string mark = NewMark();
  uint64_t total = 0;
  for (const LayoutChunk& e : l.chunks) total += e.length;
  // Each worker hashes its chunk and uploads it at once: hashing (SHA-256,
  // about 1.8 GB/s a core here) overlaps the cluster's work instead of
  // delaying the first write by the whole file's hashing time. Chunks of one
  // file with the same bytes are one object: the first to claim it uploads.
  std::mutex claim_mu;
  std::set<std::array<uint8_t, 32>> claimed;
  std::vector<uint8_t> first(l.chunks.size(), 0);
  // Whether the last chunk was new: a first push finds none, a second
  // almost all, so the last outcome is the best guess of which single
  // operation settles the next one.
  std::atomic<bool> last_new{true};
  std::atomic<uint64_t> done{0}, up_n{0}, up_b{0}, have_n{0}, have_b{0};
  const uint64_t page = uint64_t(::sysconf(_SC_PAGESIZE));
  Status uploaded = ParallelFor(l.chunks.size(), options.parallel, [&](size_t i) {
    LayoutChunk& e = l.chunks[i];
    e.sha = Sha256({map.data() + e.offset, e.length});
    bool mine;
    {
      std::lock_guard<std::mutex> lock(claim_mu);
      mine = claimed.insert(e.sha).second;
    }
    if (mine) {
      first[i] = 1;
      // Marking an existing chunk is what keeps gc from deleting it under us.
      VMSNAP_ASSIGN_OR_RETURN(const bool wrote, store.Ensure(ChunkObject(e.sha.data()), {map.data() + e.offset, e.length},
                                                              mark, last_new.load(std::memory_order_relaxed)));
      last_new.store(wrote, std::memory_order_relaxed);
      (wrote ? up_n : have_n) += 1;
      (wrote ? up_b : have_b) += e.length;
    }
    // Settled (librados copied the bytes it sent): the chunk's pages leave
    // the mapping now, while other chunks are in flight, instead of all at
    // once in the munmap at the end, which a profile showed taking 5 % of
    // the client's CPU after the last upload.
    const uint64_t lo = e.offset / page * page, hi = (e.offset + e.length + page - 1) / page * page;
    (void)::madvise(map.data() + lo, std::min(hi, size) - lo, MADV_DONTNEED);
    const uint64_t d = done.fetch_add(e.length) + e.length;
    if (options.progress) options.progress(d, total);
    return Status::Ok();
  });
  VMSNAP_RETURN_IF_ERROR(uploaded);
  std::vector<size_t> unique;
  for (size_t i = 0; i < l.chunks.size(); ++i) {
    if (first[i]) unique.push_back(i);
  }
  st.chunks = unique.size();
  st.uploaded_chunks = up_n;
  st.uploaded_bytes = up_b;
  st.present_chunks = have_n;
  st.present_bytes = have_b;

  const auto elapsed = std::chrono::steady_clock::now() - start;
  if (elapsed > std::chrono::seconds(options.remark_after_s)) {
    // Marks from the start of a long push may be older than gc's grace now.
    const std::string again = NewMark();
    VMSNAP_RETURN_IF_ERROR(ParallelFor(unique.size(), options.parallel, [&](size_t k) {
      const LayoutChunk& e = l.chunks[unique[k]];
      return store.Ensure(ChunkObject(e.sha.data()), {map.data() + e.offset, e.length}, again, false).status();
    }));
  }
  // Last: from this moment the snapshot exists for every reader.
  const std::vector<uint8_t> bytes = EncodeLayout(l);
  st.layout_bytes = bytes.size();
  VMSNAP_RETURN_IF_ERROR(store.Put(LayoutObject(name), bytes, mark));
  st.parent = l.parent;
  st.AddParents(parents);
  return st;
}

}  // namespace vmsnap::store
