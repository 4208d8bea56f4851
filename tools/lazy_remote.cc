// SPDX-License-Identifier: MIT
// OpenRemote (lazy_remote.h): URL to store to lazily filled cache file.
#include "tools/lazy_remote.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include <xxhash.h>

#include "base/cache_dir.h"
#include "base/fd.h"
#include "base/hex.h"
#include "base/parallel.h"
#ifdef VMSNAP_HAVE_STORE
#include "store/layout_object.h"
#include "store/lazy_cache.h"
#include "store/store_url.h"
#endif

namespace vmsnap::cli {

#ifdef VMSNAP_HAVE_STORE
namespace {

// Sessions opened ahead, by store root; each is handed out once (a warm VM's
// process serves one request).
std::mutex sessions_mu;
std::map<std::string, std::unique_ptr<store::ObjectStore>>& Sessions() {
  static auto* m = new std::map<std::string, std::unique_ptr<store::ObjectStore>>();
  return *m;
}

// A store given by itself: all of an s3:// path is the key prefix.
Result<store::StoreUrl> ParseRoot(const std::string& text) {
  VMSNAP_ASSIGN_OR_RETURN(store::StoreUrl url, store::ParseStoreUrl(text, /*name_required=*/false));
  if (url.scheme == "rados" && !url.name.empty()) {
    return Status::InvalidArgument(text + ": names a snapshot; give the store alone (rados://POOL)");
  }
  if (!url.name.empty()) url.prefix = url.prefix.empty() ? url.name : url.prefix + "/" + url.name;
  url.name.clear();
  return url;
}

std::unique_ptr<store::ObjectStore> TakeSession(const std::string& root) {
  std::lock_guard<std::mutex> lock(sessions_mu);
  auto it = Sessions().find(root);
  if (it == Sessions().end()) return nullptr;
  std::unique_ptr<store::ObjectStore> s = std::move(it->second);
  Sessions().erase(it);
  return s;
}

}  // namespace
#endif

void AddRemoteOptions(CLI::App* sub, RemoteOptions& o) {
  sub->add_option("--ceph-conf", o.ceph_conf,
                  "store URLs: ceph.conf of the cluster (default: CEPH_CONF, then /etc/ceph/ceph.conf)");
  sub->add_option("--cache-dir", o.cache_dir,
                  "store URLs: where fetched snapshots are kept (default: ${XDG_CACHE_HOME:-~/.cache}/vmsnap/lazy)");
  sub->add_option("--cache-size", o.cache_size,
                  "store URLs: disk space the cache directory may use, e.g. 16G (default); the least recently "
                  "used snapshots and records of names are removed to make room")
      ->transform(CLI::AsSizeValue(false));
  sub->add_option("--fetch-parallel", o.parallel, "store URLs: chunk objects in flight at once (default 8)")
      ->check(CLI::Range(1, 256));
  sub->add_option("--fetch-timeout", o.timeout_s,
                  "store URLs: seconds to wait for a chunk before the VM is stopped (default 10)")
      ->check(CLI::Range(1, 3600));
}

Status CheckStoreRoots(const std::vector<std::string>& roots) {
  for (const std::string& r : roots) {
#ifdef VMSNAP_HAVE_STORE
    VMSNAP_RETURN_IF_ERROR(ParseRoot(r).status());
#else
    return Status::Unsupported(r + ": this vmsnap was built without the chunk store (librados)");
#endif
  }
  return Status::Ok();
}

#ifdef VMSNAP_HAVE_STORE
void PreloadStoreLibraries(const std::vector<std::string>& roots) {
  for (const std::string& r : roots) {
    if (auto url = ParseRoot(r); url.ok()) store::PreloadClient(*url);
  }
}

void OpenStoreSessions(const std::vector<std::string>& roots, const std::string& ceph_conf) {
  for (const std::string& r : roots) {
    auto url = ParseRoot(r);
    if (!url.ok()) continue;
    auto st = store::OpenStore(*url, ceph_conf);
    if (!st.ok()) continue;
    // librados meets an OSD on the first operation on one of its objects:
    // one read of an object that need not exist opens a session with the
    // OSD it maps to (all of them, on a one-OSD cluster). An S3 store's
    // opening already listed the bucket, over the connection it keeps.
    if (url->scheme == "rados") (void)(*st)->Mark(store::kLayoutPrefix);
    std::lock_guard<std::mutex> lock(sessions_mu);
    Sessions()[store::StoreRoot(*url)] = std::move(st).value();
  }
}

RemoteHooks HooksOf(std::shared_ptr<store::LazyChain> src) {
  RemoteHooks h;
  h.fetch = [src](size_t layer, size_t chunk) { return src->Fetch(layer, chunk); };
  h.restored = [src] {
    src->Discard();
    src->StartPrefetch();
  };
  return h;
}

Result<std::shared_ptr<store::LazyChain>> OpenRemote(const std::string& text, const RemoteOptions& options) {
  VMSNAP_ASSIGN_OR_RETURN(store::StoreUrl url, store::ParseStoreUrl(text, /*name_required=*/true));
  std::string dir = options.cache_dir;
  if (dir.empty()) {
    VMSNAP_ASSIGN_OR_RETURN(dir, UserCacheDir("lazy"));
  }
  std::unique_ptr<store::ObjectStore> st = TakeSession(store::StoreRoot(url));
  if (st == nullptr) {
    VMSNAP_ASSIGN_OR_RETURN(st, store::OpenStore(url, options.ceph_conf));
  }
  store::LazyCacheOptions o;
  o.dir = dir;
  o.max_bytes = options.cache_size;
  o.parallel = options.parallel;
  o.timeout_s = options.timeout_s;
  VMSNAP_ASSIGN_OR_RETURN(std::unique_ptr<store::LazyChain> src,
                          store::LazyChain::Open(std::move(st), url.name, o));
  return std::shared_ptr<store::LazyChain>(std::move(src));
}


namespace {

// A URL's record in the cache directory (StoreAhead): its layout objects as
// the last confirmed load read them, root last, in host byte order (a cache
// of this host's, not an exchange format):
//   "VMSNAPNR", u32 count, then per object u32 name length, name, u64
//   length, bytes.
// A record that does not parse is ignored (the load reads the store); one
// that parses but is out of date is caught by Confirm; each layout object
// carries its own checksum, which opening the chain checks.
using Layouts = std::map<std::string, std::vector<uint8_t>>;
constexpr char kRecordMagic[8] = {'V', 'M', 'S', 'N', 'A', 'P', 'N', 'R'};
// Larger records are neither read nor written.
constexpr size_t kMaxRecord = 64 << 20;

std::string RecordPath(const std::string& dir, const store::StoreUrl& url) {
  const std::string key = store::SnapshotUrl(url, url.name);
  const XXH128_hash_t h = XXH3_128bits(key.data(), key.size());
  uint8_t b[16];
  std::memcpy(b, &h.high64, 8);
  std::memcpy(b + 8, &h.low64, 8);
  return store::LazyChain::RecordPath(dir, BytesHex(b));
}

Layouts ReadRecord(const std::string& path) {
  Layouts out;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0 || st.st_size < 12 || size_t(st.st_size) > kMaxRecord) return out;
  std::vector<uint8_t> b(static_cast<size_t>(st.st_size));
  if (::pread(fd.get(), b.data(), b.size(), 0) != static_cast<ssize_t>(b.size())) return out;
  if (std::memcmp(b.data(), kRecordMagic, 8) != 0) return out;
  size_t at = 8;
  auto take = [&](void* to, size_t n) {
    if (b.size() - at < n) return false;
    std::memcpy(to, b.data() + at, n);
    at += n;
    return true;
  };
  uint32_t count = 0;
  if (!take(&count, 4)) return out;
  Layouts got;
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t name_len = 0;
    uint64_t len = 0;
    std::string name;
    if (!take(&name_len, 4) || b.size() - at < name_len) return out;
    name.assign(reinterpret_cast<const char*>(b.data() + at), name_len);
    at += name_len;
    if (!take(&len, 8) || b.size() - at < len) return out;
    got[name].assign(b.data() + at, b.data() + at + len);
    at += len;
  }
  if (at != b.size()) return out;
  return got;
}

// Best effort: a load whose record cannot be written only loses the head
// start next time.
void WriteRecord(const store::LazyChain& chain, const std::string& path, const Layouts& layouts) {
  std::string b(kRecordMagic, 8);
  auto put = [&b](const void* p, size_t n) { b.append(static_cast<const char*>(p), n); };
  const uint32_t count = static_cast<uint32_t>(layouts.size());
  put(&count, 4);
  for (const auto& [name, bytes] : layouts) {
    const uint32_t name_len = static_cast<uint32_t>(name.size());
    const uint64_t len = bytes.size();
    put(&name_len, 4);
    put(name.data(), name.size());
    put(&len, 8);
    put(bytes.data(), bytes.size());
  }
  if (b.size() > kMaxRecord) return;
  chain.KeepRecord(path, b);
}

}  // namespace

struct StoreAhead::State {
  store::StoreUrl url;
  std::string where;  // the store's where(), known before it is open
  store::LazyCacheOptions cache;
  std::string ceph_conf, record_path;
  Layouts record;  // read before the thread starts; not changed after

  // Written by the connecting thread before `ready`.
  std::shared_future<void> ready;
  Status status;
  std::shared_ptr<store::ObjectStore> store;
  bool record_current = false;  // every recorded layout object is the store's now

  // The last Open: from the record, and the layout objects it used.
  bool speculative = false;
  std::string outcome;  // what became of the record (StoreAhead::Outcome)
  bool tried_record = false;
  bool confirmed = false;  // Confirm said true for the last Open's chain
  std::shared_ptr<store::LazyChain> chain;  // the last Open's, until Confirm settles it
  std::mutex mu;
  Layouts seen;
};

namespace {

// The store a chain is opened on: layout objects from the record while
// speculating, everything else (and every layout object otherwise) from
// the store once the connecting thread has it. Layout objects that come
// from the store are kept in `seen` for the next record.
class AheadStore final : public store::ForwardingStore {
 public:
  AheadStore(std::shared_ptr<StoreAhead::State> st, bool from_record)
      : st_(std::move(st)), from_record_(from_record) {}
  const std::string& where() const override { return st_->where; }

  Result<std::vector<uint8_t>> Get(const std::string& name) override {
    const bool layout = name.rfind(store::kLayoutPrefix, 0) == 0;
    if (from_record_) {
      auto it = st_->record.find(name);
      // Not recorded (a parent that was not a parent then): this open
      // fails, and the load reads the store instead.
      if (it == st_->record.end()) return Status::Io(where() + "/" + name + ": not in the record");
      std::lock_guard<std::mutex> lock(st_->mu);
      st_->seen[name] = it->second;
      return it->second;
    }
    VMSNAP_ASSIGN_OR_RETURN(store::ObjectStore * s, Target());
    auto got = s->Get(name);
    if (got.ok() && layout) {
      std::lock_guard<std::mutex> lock(st_->mu);
      st_->seen[name] = *got;
    }
    return got;
  }

 protected:
  // The session, once the connecting thread has it.
  Result<store::ObjectStore*> Target() override {
    st_->ready.wait();
    if (!st_->status.ok()) return st_->status;
    return st_->store.get();
  }

 private:
  std::shared_ptr<StoreAhead::State> st_;
  bool from_record_;
};

}  // namespace

Result<std::unique_ptr<StoreAhead>> StoreAhead::Start(const std::string& text, const RemoteOptions& options) {
  auto st = std::make_shared<State>();
  VMSNAP_ASSIGN_OR_RETURN(st->url, store::ParseStoreUrl(text, /*name_required=*/true));
  st->where = store::StoreRoot(st->url);
  st->cache.dir = options.cache_dir;
  if (st->cache.dir.empty()) {
    VMSNAP_ASSIGN_OR_RETURN(st->cache.dir, UserCacheDir("lazy"));
  }
  st->cache.max_bytes = options.cache_size;
  st->cache.parallel = options.parallel;
  st->cache.timeout_s = options.timeout_s;
  st->ceph_conf = options.ceph_conf;
  st->record_path = RecordPath(st->cache.dir, st->url);
  st->record = ReadRecord(st->record_path);
  std::promise<void> done;
  st->ready = done.get_future().share();
  // Detached: a command that ends while the cluster is still being
  // reached does not wait for it (load ends the process with _exit).
  std::thread([st, done = std::move(done)]() mutable {
    auto opened = store::OpenStore(st->url, st->ceph_conf);
    if (!opened.ok()) {
      st->status = opened.status();
    } else {
      st->store = std::move(opened).value();
      // Confirm's answer, read as soon as the session is up: every layout
      // object of the chain at once (one round trip, not one per layer).
      std::vector<const Layouts::value_type*> objs;
      for (const auto& kv : st->record) objs.push_back(&kv);
      const Status same = ParallelFor(objs.size(), unsigned(objs.size()), [&](size_t i) {
        auto got = st->store->Get(objs[i]->first);
        if (!got.ok()) return got.status();
        return *got == objs[i]->second ? Status::Ok() : Status::Corruption(objs[i]->first + ": changed");
      });
      st->record_current = !objs.empty() && same.ok();
    }
    done.set_value();
  }).detach();
  auto ahead = std::unique_ptr<StoreAhead>(new StoreAhead());
  ahead->state_ = std::move(st);
  return ahead;
}

StoreAhead::~StoreAhead() = default;

const std::string& StoreAhead::Outcome() const { return state_->outcome; }

Result<std::shared_ptr<store::LazyChain>> StoreAhead::Open() {
  State& st = *state_;
  st.confirmed = false;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    st.seen.clear();
  }
  if (!st.tried_record && !st.record.empty()) {
    st.tried_record = true;
    // Only onto files the cache holds: a record the store has not
    // confirmed never makes room (removing other snapshots) nor starts new
    // files.
    store::LazyCacheOptions o = st.cache;
    o.only_cached = true;
    auto chain = store::LazyChain::Open(std::make_unique<AheadStore>(state_, true), st.url.name, o);
    if (chain.ok()) {
      st.speculative = true;
      st.chain = std::move(chain).value();
      return st.chain;
    }
    if (chain.status().code() == Code::kNotFound) {
      st.outcome = "the cache no longer held the recorded snapshot: loaded from the store";
    }
    std::lock_guard<std::mutex> lock(st.mu);
    st.seen.clear();
  }
  st.tried_record = true;
  st.speculative = false;
  // The store's own error, not one about its layout object.
  st.ready.wait();
  if (!st.status.ok()) return st.status;
  VMSNAP_ASSIGN_OR_RETURN(st.chain,
                          store::LazyChain::Open(std::make_unique<AheadStore>(state_, false), st.url.name, st.cache));
  return st.chain;
}

Result<bool> StoreAhead::Confirm(const std::function<void()>& drop) {
  State& st = *state_;
  st.ready.wait();
  if (!st.status.ok()) return st.status;
  if (st.speculative) {
    st.speculative = false;
    st.outcome = st.record_current ? "started from the cache's record of the name"
                                   : "the cache's record of the name was outdated: loaded again from the store";
    if (!st.record_current) {
      // In this order: what was made from the chain may still read its
      // files, which discarding the chain can remove.
      if (drop) drop();
      if (st.chain) st.chain->Discard();
      st.chain.reset();
      return false;
    }
  }
  st.confirmed = true;
  return true;
}

void StoreAhead::Remember() {
  State& st = *state_;
  if (!st.confirmed || !st.chain) return;
  // A chain the cache could not keep (larger than --cache-size) has files
  // for this load alone: a record of it could never be used.
  if (!st.chain->kept()) {
    ::unlink(st.record_path.c_str());
    return;
  }
  Layouts seen;
  {
    std::lock_guard<std::mutex> lock(st.mu);
    seen = st.seen;
  }
  // A record used as it was is only marked as used (the cache removes the
  // least recently used first), unless it went meanwhile.
  if (seen == st.record && ::utimensat(AT_FDCWD, st.record_path.c_str(), nullptr, 0) == 0) return;
  if (!seen.empty()) WriteRecord(*st.chain, st.record_path, seen);
}

#endif  // VMSNAP_HAVE_STORE

}  // namespace vmsnap::cli
