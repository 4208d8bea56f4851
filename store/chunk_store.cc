// SPDX-License-Identifier: MIT
// Push, pull, list and garbage collection of content-addressed snapshots; see
// chunk_store.h and docs/store.md for the layout and the guarantees.
#include "store/chunk_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "base/fd.h"
#include "base/hex.h"
#include "base/mapping.h"
#include "format/chain.h"
#include "format/layout.h"
#include "format/output.h"
#include "format/reader.h"
#include "store/dl_library.h"

namespace vmsnap::store {
namespace {

using layout::GetLe32;
using layout::GetLe64;
using layout::PutLe32;
using layout::PutLe64;

// The layout object (docs/store.md): "VMSNAPLY", version, chunk count, file
// size, the gap bytes' raw and stored sizes; in version 2 (an incremental
// snapshot) the parent's snapshot id, its name's length and the name; one
// entry per chunk in file order, the gap bytes (zstd), XXH3-64 of
// everything before it. A full snapshot is still written as version 1, so
// older readers read it.
constexpr char kLayoutMagic[8] = {'V', 'M', 'S', 'N', 'A', 'P', 'L', 'Y'};
constexpr uint32_t kLayoutVersion = 1;
constexpr uint32_t kLayoutVersionParent = 2;
constexpr size_t kLayoutHeader = 40;
constexpr size_t kParentHeader = 20;  // parent id, name length
constexpr size_t kMaxParentName = 4096;
constexpr size_t kEntryBytes = 48;  // offset, length, SHA-256

struct Entry {
  uint64_t offset = 0;
  uint64_t length = 0;
  std::array<uint8_t, 32> sha{};
};

struct Layout {
  uint64_t file_size = 0;
  std::vector<Entry> chunks;   // by offset, not overlapping
  std::vector<uint8_t> gaps;   // every byte of the file outside the chunks, in order
  std::string parent;          // empty: a full snapshot
  layout::SnapshotId parent_id{};
};

std::vector<uint8_t> EncodeLayout(const Layout& l) {
  const size_t bound = ZSTD_compressBound(l.gaps.size());
  const size_t head = kLayoutHeader + (l.parent.empty() ? 0 : kParentHeader + l.parent.size());
  std::vector<uint8_t> out(head + l.chunks.size() * kEntryBytes + bound + 8);
  uint8_t* p = out.data();
  std::memcpy(p, kLayoutMagic, 8);
  PutLe32(p + 8, l.parent.empty() ? kLayoutVersion : kLayoutVersionParent);
  PutLe32(p + 12, static_cast<uint32_t>(l.chunks.size()));
  PutLe64(p + 16, l.file_size);
  PutLe64(p + 24, l.gaps.size());
  if (!l.parent.empty()) {
    std::memcpy(p + kLayoutHeader, l.parent_id.data(), l.parent_id.size());
    PutLe32(p + kLayoutHeader + 16, static_cast<uint32_t>(l.parent.size()));
    std::memcpy(p + kLayoutHeader + kParentHeader, l.parent.data(), l.parent.size());
  }
  size_t at = head;
  for (const Entry& e : l.chunks) {
    PutLe64(p + at, e.offset);
    PutLe64(p + at + 8, e.length);
    std::memcpy(p + at + 16, e.sha.data(), 32);
    at += kEntryBytes;
  }
  const size_t z = ZSTD_compress(p + at, bound, l.gaps.data(), l.gaps.size(), 3);
  PutLe64(p + 32, z);  // ZSTD_compress cannot fail with a bound-sized buffer
  at += z;
  PutLe64(p + at, XXH3_64bits(p, at));
  out.resize(at + 8);
  return out;
}

Result<Layout> DecodeLayout(std::span<const uint8_t> b, const std::string& where) {
  auto bad = [&](const std::string& why) { return Status::Corruption(where + ": not a snapshot layout (" + why + ")"); };
  if (b.size() < kLayoutHeader + 8) return bad("too short");
  if (std::memcmp(b.data(), kLayoutMagic, 8) != 0) return bad("bad magic");
  if (GetLe64(b.data() + b.size() - 8) != XXH3_64bits(b.data(), b.size() - 8)) return bad("checksum mismatch");
  const uint32_t version = GetLe32(b.data() + 8);
  if (version != kLayoutVersion && version != kLayoutVersionParent) {
    return Status::Unsupported(where + ": layout version " + std::to_string(version) +
                               " is newer than this vmsnap reads");
  }
  Layout l;
  size_t head = kLayoutHeader;
  if (version == kLayoutVersionParent) {
    if (b.size() < kLayoutHeader + kParentHeader + 8) return bad("too short");
    std::memcpy(l.parent_id.data(), b.data() + kLayoutHeader, l.parent_id.size());
    const uint32_t len = GetLe32(b.data() + kLayoutHeader + 16);
    if (len == 0 || len > kMaxParentName || len > b.size() - 8 - kLayoutHeader - kParentHeader) {
      return bad("parent name past its end");
    }
    l.parent.assign(reinterpret_cast<const char*>(b.data()) + kLayoutHeader + kParentHeader, len);
    head += kParentHeader + len;
  }
  const uint64_t n = GetLe32(b.data() + 12);
  l.file_size = GetLe64(b.data() + 16);
  const uint64_t gaps_raw = GetLe64(b.data() + 24), gaps_stored = GetLe64(b.data() + 32);
  if (n > (b.size() - head - 8) / kEntryBytes) return bad("chunk count past its end");
  const size_t entries_end = head + n * kEntryBytes;
  if (gaps_stored != b.size() - 8 - entries_end) return bad("gap bytes do not fill it");
  uint64_t covered = 0, prev_end = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const uint8_t* p = b.data() + head + i * kEntryBytes;
    Entry e;
    e.offset = GetLe64(p);
    e.length = GetLe64(p + 8);
    std::memcpy(e.sha.data(), p + 16, 32);
    if (e.offset < prev_end || e.length > l.file_size || e.offset > l.file_size - e.length) {
      return bad("chunk " + std::to_string(i) + " outside the file or out of order");
    }
    prev_end = e.offset + e.length;
    covered += e.length;
    l.chunks.push_back(e);
  }
  if (covered + gaps_raw != l.file_size) return bad("chunks and gaps do not add up to the file size");
  l.gaps.resize(gaps_raw);
  const size_t got = ZSTD_decompress(l.gaps.data(), l.gaps.size(), b.data() + entries_end, gaps_stored);
  if (ZSTD_isError(got) || got != gaps_raw) return bad("gap bytes do not decompress");
  return l;
}

// The file's bytes [off, off + len), which no chunk may overlap (the
// header, the manifest, the footer): from the layout's gap bytes.
Result<std::span<const uint8_t>> GapBytes(const Layout& l, uint64_t off, uint64_t len, const std::string& where) {
  uint64_t gap_at = 0, file_at = 0;
  for (size_t i = 0; i <= l.chunks.size(); ++i) {
    const uint64_t end = i < l.chunks.size() ? l.chunks[i].offset : l.file_size;
    if (off >= file_at && len <= end - file_at && off - file_at <= end - file_at - len) {
      return std::span<const uint8_t>(l.gaps.data() + gap_at + (off - file_at), len);
    }
    gap_at += end - file_at;
    if (i < l.chunks.size()) file_at = end + l.chunks[i].length;
  }
  return Status::Corruption(where + ": not a snapshot layout (the manifest or footer lies in a chunk)");
}

// The snapshot id of the file a layout describes: XXH3-128 of its manifest,
// found through the footer (checked as a file's footer is), both in the gap
// bytes; the manifest is checked against the footer's checksum.
Result<layout::SnapshotId> LayoutId(const Layout& l, const std::string& where) {
  auto bad = [&](const std::string& why) { return Status::Corruption(where + ": not a snapshot layout (" + why + ")"); };
  if (l.file_size < layout::kFooterSize) return bad("no footer");
  VMSNAP_ASSIGN_OR_RETURN(std::span<const uint8_t> footer_bytes,
                          GapBytes(l, l.file_size - layout::kFooterSize, layout::kFooterSize, where));
  auto footer = layout::DecodeFooter(footer_bytes.first<layout::kFooterSize>(), l.file_size);
  if (!footer.ok()) return bad(footer.status().message());
  VMSNAP_ASSIGN_OR_RETURN(std::span<const uint8_t> manifest,
                          GapBytes(l, footer->manifest_offset, footer->manifest_length, where));
  if (layout::Checksum(manifest.data(), manifest.size()) != footer->manifest_checksum) {
    return bad("the manifest does not match the footer's checksum");
  }
  return layout::ComputeId(manifest);
}

std::array<uint8_t, 32> Sha256(std::span<const uint8_t> bytes) {
  std::array<uint8_t, 32> out;
  dl::Sha256(bytes.data(), bytes.size(), out.data());
  return out;
}

// "<unix seconds> <random>": gc reads the time; the random part makes every
// push's mark its own, so gc's compare-and-delete notices any new mark.
std::string NewMark() {
  std::random_device rd;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%lld %08x%08x", static_cast<long long>(std::time(nullptr)), rd(), rd());
  return buf;
}

int64_t MarkTime(const std::string& mark) { return std::atoll(mark.c_str()); }

}  // namespace

Status ParallelFor(size_t n, unsigned threads, const std::function<Status(size_t)>& fn) {
  std::atomic<size_t> next{0};
  std::mutex mu;
  Status first = Status::Ok();
  std::atomic<bool> failed{false};
  auto work = [&] {
    for (;;) {
      if (failed.load()) return;
      const size_t i = next.fetch_add(1);
      if (i >= n) return;
      Status s = fn(i);
      if (!s.ok()) {
        std::lock_guard<std::mutex> l(mu);
        if (first.ok()) first = std::move(s);
        failed = true;
      }
    }
  };
  std::vector<std::thread> pool;
  const unsigned t = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(std::max<size_t>(n, 1))));
  for (unsigned i = 1; i < t; ++i) pool.emplace_back(work);
  work();
  for (auto& th : pool) th.join();
  return first;
}

// A store that cannot write "only if absent" asks first: a plain write
// would replace an object gc may be deleting, and could not tell the caller
// whether the bytes were there. A chunk gc removes between the two is
// written again.
Result<bool> ObjectStore::Ensure(const std::string& name, std::span<const uint8_t> data, const std::string& mark,
                                 bool likely_new) {
  (void)likely_new;
  Status s = Touch(name, mark);
  if (s.ok()) return false;
  if (s.code() != Code::kNotFound) return s;
  VMSNAP_RETURN_IF_ERROR(Put(name, data, mark));
  return true;
}

Result<StoreUrl> ParseStoreUrl(const std::string& url, bool name_required) {
  StoreUrl u;
  u.text = url;
  const size_t colon = url.find("://");
  if (colon == std::string::npos) {
    return Status::InvalidArgument(url + ": not a store URL (rados://POOL/NAME or s3://BUCKET/PREFIX/NAME)");
  }
  u.scheme = url.substr(0, colon);
  if (u.scheme != "rados" && u.scheme != "s3") {
    return Status::InvalidArgument(url + ": unknown store scheme " + u.scheme + ":// (rados:// or s3://)");
  }
  const bool s3 = u.scheme == "s3";
  const char* form = s3 ? "s3://BUCKET/PREFIX/NAME" : "rados://POOL/NAME";
  const std::string rest = url.substr(colon + 3);
  const size_t slash = rest.find('/');
  u.pool = rest.substr(0, slash);
  const std::string path = slash == std::string::npos ? "" : rest.substr(slash + 1);
  if (s3) {
    // The last component names the snapshot, the folders before it the
    // store: s3://b/fleet/vm1 keeps its objects under fleet/.
    const size_t last = path.rfind('/');
    u.prefix = last == std::string::npos ? "" : path.substr(0, last);
    u.name = last == std::string::npos ? path : path.substr(last + 1);
    if (!u.prefix.empty() && ("/" + u.prefix + "/").find("//") != std::string::npos) {
      return Status::InvalidArgument(url + ": empty folder name in the key prefix (" + form + ")");
    }
  } else {
    u.name = path;
  }
  if (u.pool.empty()) return Status::InvalidArgument(url + ": no " + (s3 ? "bucket" : "pool") + " (" + form + ")");
  if (name_required && u.name.empty()) return Status::InvalidArgument(url + ": no snapshot name (" + form + ")");
  return u;
}

std::string StoreRoot(const StoreUrl& url) {
  return url.scheme + "://" + url.pool + (url.prefix.empty() ? "" : "/" + url.prefix);
}

std::string SnapshotUrl(const StoreUrl& url, const std::string& name) {
  return StoreRoot(url) + "/" + name;
}

void PreloadClient(const StoreUrl& url) {
  if (url.scheme == "rados") PreloadRados();
#ifdef VMSNAP_HAVE_S3
  if (url.scheme == "s3") PreloadS3();
#endif
}

Result<std::unique_ptr<ObjectStore>> OpenStore(const StoreUrl& url, const std::string& ceph_conf) {
  VMSNAP_RETURN_IF_ERROR(dl::Sha256Available());
  if (url.scheme == "rados") return OpenRados(url.pool, ceph_conf);
  if (!ceph_conf.empty()) {
    return Status::InvalidArgument(url.text + ": --ceph-conf is for rados:// URLs; an S3 store is set by AWS_ENDPOINT_URL");
  }
#ifdef VMSNAP_HAVE_S3
  auto cfg = S3ConfigFromEnv();
  if (!cfg.ok()) return Status(cfg.status().code(), StoreRoot(url) + ": " + cfg.status().message());
  return OpenS3(url.pool, url.prefix, *cfg);
#else
  return Status::Unsupported(url.text + ": this vmsnap was built without S3 support (libcurl)");
#endif
}

std::string ChunkObject(const uint8_t sha256[32]) {
  return kChunkPrefix + BytesHex(std::span<const uint8_t>(sha256, 32));
}

std::string LayoutObject(const std::string& name) { return kLayoutPrefix + name; }

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
  for (const Entry& e : l.chunks) total += e.length;
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
    Entry& e = l.chunks[i];
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
      const Entry& e = l.chunks[unique[k]];
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

namespace {

Result<std::vector<uint8_t>> GetLayout(ObjectStore& store, const std::string& name) {
  auto raw = store.Get(LayoutObject(name));
  if (!raw.ok() && raw.status().code() == Code::kNotFound) {
    return Status::NotFound(store.where() + "/" + name + ": no such snapshot");
  }
  return raw;
}

}  // namespace

Status FetchChunk(ObjectStore& store, const std::string& name, const LayoutChunk& e, uint8_t* out) {
  const std::string obj = ChunkObject(e.sha.data());
  Result<uint64_t> r = store.ReadSized(obj, e.length, out);
  if (r.ok() && (r.value() != e.length || Sha256({out, e.length}) != e.sha)) {
    return Status::Corruption(store.where() + "/" + obj + ": its bytes do not match its name (SHA-256); "
                              "the object was altered");
  }
  if (!r.ok() && r.status().code() == Code::kNotFound) {
    return Status::NotFound(store.where() + "/" + obj + ": chunk of " + name + " is missing from the store");
  }
  return r.status();
}

namespace {

Result<SnapshotLayout> Describe(std::span<const uint8_t> raw, const std::string& where) {
  VMSNAP_ASSIGN_OR_RETURN(Layout l, DecodeLayout(raw, where));
  SnapshotLayout out;
  VMSNAP_ASSIGN_OR_RETURN(out.id, LayoutId(l, where));
  out.file_size = l.file_size;
  out.chunks.reserve(l.chunks.size());
  for (const Entry& e : l.chunks) out.chunks.push_back(LayoutChunk{e.offset, e.length, e.sha});
  out.gaps = std::move(l.gaps);
  out.sha = Sha256(raw);
  out.parent = std::move(l.parent);
  out.parent_id = l.parent_id;
  return out;
}

}  // namespace

Result<SnapshotLayout> FetchLayout(ObjectStore& store, const std::string& name) {
  VMSNAP_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, GetLayout(store, name));
  return Describe(raw, store.where() + "/" + name);
}

Result<std::vector<StoredLayer>> FetchChain(ObjectStore& store, const std::string& name) {
  std::vector<StoredLayer> chain;
  std::string at = name;
  for (;;) {
    if (chain.size() > layout::kMaxParentDepth) {
      return Status::Corruption(store.where() + "/" + name + " has more than " +
                                std::to_string(layout::kMaxParentDepth) + " parents");
    }
    StoredLayer layer;
    layer.name = at;
    auto raw = GetLayout(store, at);
    if (!raw.ok() && !chain.empty() && raw.status().code() == Code::kNotFound) {
      return Status::NotFound(store.where() + "/" + at + ": no such snapshot (the parent of " + store.where() + "/" +
                              chain.back().name + ")");
    }
    VMSNAP_ASSIGN_OR_RETURN(layer.raw, std::move(raw));
    VMSNAP_ASSIGN_OR_RETURN(layer.layout, Describe(layer.raw, store.where() + "/" + at));
    if (!chain.empty() && layer.layout.id != chain.back().layout.parent_id) {
      // Never used in its stead: the child's pages sit on top of the
      // parent it was made on, and no other.
      return Status::Corruption(store.where() + "/" + at + " is not the parent of " + store.where() + "/" +
                                chain.back().name + " (its snapshot id is " + layout::IdToHex(layer.layout.id) +
                                ", the child's parent has " + layout::IdToHex(chain.back().layout.parent_id) +
                                "): it was pushed again with other content");
    }
    at = layer.layout.parent;
    chain.push_back(std::move(layer));
    if (at.empty()) break;
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

Result<LinkedChain> LinkChain(const std::string& dir, const std::vector<const SnapshotReader*>& readers) {
  namespace fs = std::filesystem;
  std::vector<std::string> layers;
  for (const SnapshotReader* r : readers) layers.push_back(r->path());
  if (layers.size() <= 1) return LinkedChain{layers.empty() ? std::string() : layers.back(), UniqueFd(), std::string()};
  // Where each layer goes, relative to the chain's folder: the leaf first,
  // then each parent where its child's manifest looks for it. A parent
  // path that climbs ("../") needs the leaf that many folders down.
  std::vector<std::string> recorded(layers.size());
  size_t climbs = 0;
  for (size_t k = 1; k < layers.size(); ++k) {
    const auto m = readers[k]->manifest();
    if (!m.hasParent()) return Status::Internal(layers[k] + ": a chain's layer without a parent");
    recorded[k] = m.getParent().getPath().cStr();
    if (recorded[k].empty() || recorded[k][0] == '/') {
      return Status::Unsupported(layers[k] + ": names its parent by the absolute path " + recorded[k] +
                                 "; pull the chain and load the files");
    }
    for (const auto& part : fs::path(recorded[k])) climbs += part == "..";
  }
  std::string key;
  for (const std::string& f : layers) key += fs::absolute(f).string() + '\n';
  const std::string chain_dir = dir + "/chains/" + BytesHex(Sha256({reinterpret_cast<const uint8_t*>(key.data()), key.size()}));
  fs::path leaf = "l";
  for (size_t i = 0; i < climbs; ++i) leaf /= "l";
  leaf /= BytesHex(Sha256({reinterpret_cast<const uint8_t*>(layers.back().data()), layers.back().size()})).substr(0, 16) +
          ".vmsnap";
  std::vector<fs::path> place(layers.size());
  place.back() = leaf;
  std::set<fs::path> used{leaf};
  for (size_t k = layers.size() - 1; k > 0; --k) {
    place[k - 1] = (place[k].parent_path() / recorded[k]).lexically_normal();
    if (place[k - 1].empty() || *place[k - 1].begin() == ".." || !used.insert(place[k - 1]).second) {
      return Status::Unsupported(layers[k] + ": its parent path " + recorded[k] + " cannot be laid out beside it");
    }
  }
  const std::string leaf_path = chain_dir + "/" + leaf.string();
  // The folder is held (a shared lock on it) until the chain is open:
  // RemoveDeadChains takes only folders nobody holds. A folder renamed away
  // between finding it and locking it is made again.
  for (int attempt = 0; attempt < 4; ++attempt) {
    std::error_code ec;
    if (!fs::exists(leaf_path, ec)) {
      // Made aside, then renamed into place: two loads of one chain never
      // see half a folder.
      const std::string tmp = chain_dir + "." + std::to_string(::getpid()) + ".tmp";
      fs::remove_all(tmp, ec);
      for (size_t k = 0; k < layers.size(); ++k) {
        const fs::path link = fs::path(tmp) / place[k];
        fs::create_directories(link.parent_path(), ec);
        if (!ec) fs::create_symlink(fs::absolute(layers[k]), link, ec);
        if (ec) {
          fs::remove_all(tmp, ec);
          return Status::Io("link " + link.string() + " to " + layers[k] + ": " + ec.message());
        }
      }
      if (::rename(tmp.c_str(), chain_dir.c_str()) != 0) {
        const int err = errno;
        fs::remove_all(tmp, ec);
        if (err != EEXIST && err != ENOTEMPTY) return Status::FromErrno(err, "create " + chain_dir);
      }
    }
    UniqueFd hold(::open(chain_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    struct stat held {}, there {};
    if (hold.valid() && ::flock(hold.get(), LOCK_SH) == 0 && ::fstat(hold.get(), &held) == 0 &&
        ::stat(chain_dir.c_str(), &there) == 0 && held.st_ino == there.st_ino && held.st_dev == there.st_dev) {
      return LinkedChain{leaf_path, std::move(hold), chain_dir};
    }
  }
  return Status::Io(chain_dir + ": removed again and again while it was made");
}

void RemoveDeadChains(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::directory_iterator it(fs::path(dir) / "chains", ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path folder = it->path();
    // Folders being made or removed have a '.' in their names.
    if (folder.filename().string().find('.') != std::string::npos) continue;
    bool dead = false;
    std::error_code walk;
    for (fs::recursive_directory_iterator l(folder, walk), lend; !walk && l != lend && !dead; l.increment(walk)) {
      std::error_code e;
      dead = l->is_symlink(e) && !fs::exists(l->path(), e);
    }
    if (dead) RemoveChainFolder(folder.string());
  }
}

void RemoveChainFolder(const std::string& folder) {
  UniqueFd fd(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  // Held: a load is opening the chain through it.
  if (!fd.valid() || ::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return;
  const std::string gone = folder + "." + std::to_string(::getpid()) + ".gone";
  std::error_code e;
  if (::rename(folder.c_str(), gone.c_str()) == 0) std::filesystem::remove_all(gone, e);
}

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
  for (const Entry& e : l.chunks) longest = std::max(longest, e.length);
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
      const Entry& e = l.chunks[i];
      Status r = FetchChunk(store, name, LayoutChunk{e.offset, e.length, e.sha}, buffers[i % window].get());
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

Result<std::vector<ListedSnapshot>> ListSnapshots(ObjectStore& store, const std::string& prefix) {
  VMSNAP_ASSIGN_OR_RETURN(std::vector<std::string> names, store.List(LayoutObject(prefix)));
  std::sort(names.begin(), names.end());
  std::vector<ListedSnapshot> out;
  for (const std::string& obj : names) {
    ListedSnapshot s;
    s.name = obj.substr(std::strlen(kLayoutPrefix));
    auto raw = store.Get(obj);
    if (!raw.ok() && raw.status().code() == Code::kNotFound) continue;  // removed meanwhile
    if (!raw.ok()) return raw.status();
    VMSNAP_ASSIGN_OR_RETURN(Layout l, DecodeLayout(raw.value(), store.where() + "/" + s.name));
    s.file_bytes = l.file_size;
    s.chunks = l.chunks.size();
    s.parent = l.parent;
    out.push_back(std::move(s));
  }
  return out;
}

Result<GcStats> CollectGarbage(ObjectStore& store, uint64_t grace_s, bool dry_run) {
  GcStats st;
  // Chunks are listed before the layouts are read: a chunk a push uploads
  // later is not a candidate, and one it relies on is marked by it (young).
  VMSNAP_ASSIGN_OR_RETURN(std::vector<std::string> chunks, store.List(kChunkPrefix));
  VMSNAP_ASSIGN_OR_RETURN(std::vector<std::string> layouts, store.List(kLayoutPrefix));
  st.chunks = chunks.size();
  std::set<std::string> referenced;
  for (const std::string& obj : layouts) {
    auto raw = store.Get(obj);
    if (!raw.ok() && raw.status().code() == Code::kNotFound) continue;
    if (!raw.ok()) return raw.status();
    // An unreadable layout stops gc: its chunks cannot be told apart.
    VMSNAP_ASSIGN_OR_RETURN(Layout l, DecodeLayout(raw.value(), store.where() + "/" + obj));
    for (const Entry& e : l.chunks) referenced.insert(ChunkObject(e.sha.data()));
    ++st.snapshots;
  }
  const int64_t now = std::time(nullptr);
  for (const std::string& obj : chunks) {
    if (referenced.count(obj)) continue;
    uint64_t size = 0;
    auto mark = store.Mark(obj, &size);
    if (!mark.ok() && mark.status().code() == Code::kNotFound) continue;
    if (!mark.ok()) return mark.status();
    if (now - MarkTime(mark.value()) < static_cast<int64_t>(grace_s)) {
      ++st.young_chunks;
      continue;
    }
    if (!dry_run) {
      auto removed = store.RemoveIfMark(obj, mark.value());
      if (!removed.ok() && removed.status().code() == Code::kNotFound) continue;
      if (!removed.ok()) return removed.status();
      if (!*removed) {
        ++st.raced_chunks;
        continue;
      }
    }
    ++st.removed_chunks;
    st.removed_bytes += size;
  }
  return st;
}

}  // namespace vmsnap::store
