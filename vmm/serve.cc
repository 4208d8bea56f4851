// SPDX-License-Identifier: MIT
// The warm pool (see serve.h). The server process only accepts connections
// and hands each one to a ready worker over a socketpair; each worker is a
// forked process that prepared its own KVM VM (a VM belongs to the process
// that created it), reads the client's request and descriptors itself,
// restores the snapshot, runs the guest, replies with its exit status and
// exits. The server forks a replacement as soon as a worker is taken. An
// idle worker may be asked to bind to a snapshot (TryBind: restore it ahead,
// from its image, up to what depends on when the guest starts); the server
// then hands it the requests for that snapshot.
#include "vmm/serve.h"

#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <vector>

#include "base/cache_dir.h"
#include "base/hex.h"
#include "format/layout.h"
#include "restore/memory/image_cache.h"
#include "vmm/control.h"

namespace vmsnap::vmm {
namespace {

// Connections accepted while no worker is ready wait here (the pool is
// being refilled); beyond this the listen backlog holds them.
constexpr size_t kMaxWaiting = 64;
// The descriptors a `load` request carries: serial output, then messages.
constexpr int kRequestFds = 2;

// One sendmsg of `len` bytes with `fds` attached; all of it or an error.
Status SendWithFds(int sock, const void* data, size_t len, std::span<const int> fds) {
  iovec iov{const_cast<void*>(data), len};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * kRequestFds)] = {};
  if (fds.size() > size_t(kRequestFds)) return Status::InvalidArgument("too many descriptors for one message");
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = ctl;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    const ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n == ssize_t(len)) return Status::Ok();
    if (n >= 0) return Status::Io("sendmsg sent " + std::to_string(n) + " of " + std::to_string(len) + " bytes");
    if (errno != EINTR) return Status::FromErrno(errno, "sendmsg");
  }
}

Status SendFd(int sock, char tag, int fd) {
  return SendWithFds(sock, &tag, 1, fd >= 0 ? std::span<const int>(&fd, 1) : std::span<const int>());
}

// recvmsg of up to `len` bytes; descriptors that came with them are
// appended to `fds` (at most `max_fds`; any beyond are closed).
ssize_t RecvWithFds(int sock, char* buf, size_t len, std::vector<UniqueFd>& fds, size_t max_fds) {
  iovec iov{buf, len};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int) * 8)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctl;
  msg.msg_controllen = sizeof ctl;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t k = 0; k < count; ++k) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
      UniqueFd owned(fd);
      if (fds.size() < max_fds) fds.push_back(std::move(owned));
    }
  }
  return n;
}

void Reply(int fd, const nlohmann::json& j) { (void)WriteLine(fd, j.dump()); }

// Snapshots the server has opened, inherited by every worker forked after:
// a worker whose client names one of them skips opening and validating the
// manifest (most of a start's own work before the VM runs). Each is keyed
// by its path and checked against the state of every layer's file, so a
// file replaced or modified since is opened afresh.
struct OpenedChain {
  std::string path;
  std::vector<std::string> layers;  // FileStamp of each, as when opened, root first
  std::shared_ptr<const SnapshotChain> chain;
};
constexpr size_t kMaxOpenedChains = 8;
// Longer paths are served but not remembered.
constexpr size_t kMaxPathMessage = 4096;

// The chain for `path` if `cache` holds it and no layer's file changed.
std::shared_ptr<const SnapshotChain> Cached(const std::deque<OpenedChain>& cache, const std::string& path) {
  for (const OpenedChain& c : cache) {
    if (c.path != path) continue;
    const auto& layers = c.chain->layers();
    for (size_t i = 0; i < layers.size(); ++i) {
      if (FileStampOf(layers[i]->path()) != c.layers[i]) return nullptr;
    }
    return c.chain;
  }
  return nullptr;
}

// Opens `path` into `cache` (most recent first) unless it is there already;
// returns its chain, or null when it cannot be opened.
std::shared_ptr<const SnapshotChain> Remember(std::deque<OpenedChain>& cache, const std::string& path) {
  if (auto fresh = Cached(cache, path)) return fresh;
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (it->path == path) {
      cache.erase(it);
      break;
    }
  }
  // The state is taken before the open: a change during it makes the entry
  // stale at once rather than wrongly fresh.
  const std::string leaf = FileStampOf(path);
  if (leaf.empty()) return nullptr;
  auto chain = restore::OpenSnapshot(path);
  if (!chain.ok()) return nullptr;  // the worker that asked reports it
  OpenedChain c;
  c.path = path;
  c.chain = std::make_shared<const SnapshotChain>(std::move(chain).value());
  for (const auto& layer : c.chain->layers()) {
    std::string st = FileStampOf(layer->path());
    if (st.empty()) return nullptr;
    c.layers.push_back(std::move(st));
  }
  if (c.layers.back() != leaf) return nullptr;
  std::shared_ptr<const SnapshotChain> opened = c.chain;
  cache.push_front(std::move(c));
  while (cache.size() > kMaxOpenedChains) cache.pop_back();
  return opened;
}

[[noreturn]] void Fail(int client, const std::string& error) {
  Reply(client, {{"ok", false}, {"error", error}});
  ::_exit(0);
}

// A worker with its client: reads the request, runs the guest, replies, and
// ends the process without unwinding anything (the client already has its
// exit status; the kernel releases the VM's memory after that).
// Cache directories a worker finds before its client comes.
struct WorkerDirs {
  std::string stamps;  // verified raw snapshots ("" if unavailable)
  std::string images;  // decompressed images ("" if unavailable)
};

// What an idle worker restored ahead (Vmm::Bind): a snapshot whose image
// was fresh, mapped over the VM's memory, and the state of every file that
// binding rests on (each layer's, the image's and its stamp's), so that a
// request sees with a few stats whether it still holds.
struct Binding {
  std::string path;  // as the server named it
  std::shared_ptr<const SnapshotChain> chain;
  std::vector<std::string> files;
  std::vector<std::string> stamps;  // FileStampOf each of `files`, when bound
  bool Holds() const {
    if (!chain) return false;
    for (size_t i = 0; i < files.size(); ++i) {
      if (FileStampOf(files[i]) != stamps[i]) return false;
    }
    return true;
  }
};

// Binds the idle `warm` VM to `path` if the snapshot fits it and its image
// is fresh: only an image, since a snapshot paged in would have its pager
// fill memory while the VM waits. Returns an empty binding otherwise.
Binding TryBind(Vmm& warm, const std::string& path, const std::deque<OpenedChain>& opened, const WorkerDirs& dirs) {
  if (dirs.images.empty() || path.empty() || path[0] != '/') return {};
  // Taken before the open, as Remember does: a change during it shows.
  const std::string leaf = FileStampOf(path);
  if (leaf.empty()) return {};
  std::shared_ptr<const SnapshotChain> chain = Cached(opened, path);
  if (!chain) {
    auto c = restore::OpenSnapshot(path);
    if (!c.ok()) return {};
    chain = std::make_shared<const SnapshotChain>(std::move(c).value());
  }
  if (!warm.WarmMismatch(*chain).empty()) return {};
  memory::ImageCache cache(dirs.images);
  Binding b;
  b.path = path;
  for (const auto& layer : chain->layers()) b.files.push_back(layer->path());
  b.files.push_back(cache.ImagePath(*chain));
  b.files.push_back(cache.StampPath(*chain));
  for (const std::string& f : b.files) {
    b.stamps.push_back(FileStampOf(f));
    if (b.stamps.back().empty()) return {};
  }
  if (b.stamps[chain->layers().size() - 1] != leaf) return {};
  if (!cache.OpenFresh(*chain).valid()) return {};
  LoadPlan plan;
  plan.lazy = true;
  plan.map_file = true;
  plan.verified_dir = dirs.stamps;
  plan.image_dir = dirs.images;
  if (!warm.Bind(chain, std::move(plan)).ok()) return {};
  b.chain = chain;
  // Unchanged since the image was found fresh: the load mapped that image.
  if (!b.Holds()) {
    (void)warm.Unbind();
    return {};
  }
  return b;
}

[[noreturn]] void ServeClient(UniqueFd client, UniqueFd chan, std::unique_ptr<Vmm> warm, const VmmOptions& vopts,
                              const std::deque<OpenedChain>& opened, const WorkerDirs& dirs,
                              const ServeOptions& o, const Binding& binding) {
  const int cfd = client.get();
  timeval tv{5, 0};
  ::setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string line;
  std::vector<UniqueFd> fds;
  std::vector<char> buf(kMaxRequestLine + 1);
  for (;;) {
    ssize_t n = RecvWithFds(cfd, buf.data(), buf.size(), fds, kRequestFds);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) Fail(cfd, "no complete request line within 5 s");
      ::_exit(0);  // the client went away before asking anything
    }
    line.append(buf.data(), size_t(n));
    size_t nl = line.find('\n');
    if (nl != std::string::npos) {
      line.resize(nl);
      break;
    }
    if (line.size() > kMaxRequestLine) {
      Fail(cfd, "request line longer than " + std::to_string(kMaxRequestLine) + " bytes");
    }
  }
  nlohmann::json req = nlohmann::json::parse(line, nullptr, false);
  if (req.is_discarded() || !req.is_object()) Fail(cfd, "request is not a JSON object");
  auto cmd = req.find("cmd");
  if (cmd == req.end() || !cmd->is_string() || *cmd != "load") {
    Fail(cfd, "this socket serves only {\"cmd\":\"load\",\"snapshot\":PATH}");
  }
  for (auto it = req.begin(); it != req.end(); ++it) {
    if (it.key() != "cmd" && it.key() != "snapshot" && it.key() != "snapshot_on_doorbell") {
      Fail(cfd, "unknown request field \"" + it.key() + "\"");
    }
  }
  std::string doorbell;
  if (auto d = req.find("snapshot_on_doorbell"); d != req.end()) {
    if (!d->is_string() || d->get<std::string>().empty() || d->get<std::string>()[0] != '/') {
      Fail(cfd, "\"snapshot_on_doorbell\" must be an absolute path");
    }
    doorbell = *d;
  }
  auto snap = req.find("snapshot");
  if (snap == req.end() || !snap->is_string() || snap->get<std::string>().empty()) {
    Fail(cfd, "\"snapshot\" must be a non-empty string");
  }
  std::string path = *snap;
  const bool remote_url = o.open_remote && path.find("://") != std::string::npos;
  if (!remote_url && path[0] != '/') Fail(cfd, "\"snapshot\" must be an absolute path");
  // The server opens a local file for the workers it forks from now on.
  if (!remote_url && path.size() < kMaxPathMessage) {
    const std::string m = "P" + path;
    (void)::send(chan.get(), m.data(), m.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  chan.Reset();
  if (fds.size() != size_t(kRequestFds)) {
    Fail(cfd, "a load request carries 2 descriptors (serial output, messages); got " + std::to_string(fds.size()));
  }
  // The guest's serial output and our messages go where the client's would.
  if (::dup2(fds[0].get(), STDOUT_FILENO) < 0 || ::dup2(fds[1].get(), STDERR_FILENO) < 0) {
    Fail(cfd, std::string("dup2: ") + std::strerror(errno));
  }
  fds.clear();

  // As `vmsnap load`: a pager error before the VM runs is Restore's to
  // explain; once it runs, it ends the VM (a vCPU waiting for that page
  // cannot be woken with a wrong one).
  struct PagerState {
    std::mutex mu;
    bool running = false;
    Status pending;
  };
  static PagerState ps;
  LoadPlan plan;
  plan.lazy = true;
  plan.on_error = [cfd](const std::string& message) {
    {
      std::lock_guard<std::mutex> lock(ps.mu);
      if (!ps.running) {
        ps.pending = Status::Io(message);
        return;
      }
    }
    std::fflush(stdout);
    Fail(cfd, "stopping the VM: " + message);
  };
  // A store URL: a local cache file that fills as the pager asks.
  RemoteSnapshot remote;
  if (remote_url) {
    auto r = o.open_remote(path);
    if (!r.ok()) Fail(cfd, r.status().message());
    remote = std::move(r).value();
    path = remote.path;
    plan.fetch = remote.fetch;
  }
  // The VM is never destroyed: the process ends with _exit while the pager
  // may still fill. Raw snapshots are mapped, verified once per file state.
  plan.map_file = !remote.fetch;
  plan.verified_dir = dirs.stamps;
  // Compressed ones are mapped from their decompressed image when a fresh
  // one exists (`vmsnap load --memory shared` builds it), else paged in.
  if (!remote_url) plan.image_dir = dirs.images;

  // The binding is used only for the very files it was made from; else it
  // is undone and the snapshot restored as by an unbound VM.
  const bool bound_start = binding.chain && !remote_url && path == binding.path && binding.Holds();
  if (binding.chain && !bound_start) {
    Status s = warm->Unbind();
    if (!s.ok()) Fail(cfd, s.message());
  }
  std::shared_ptr<const SnapshotChain> shared = bound_start ? binding.chain : Cached(opened, path);
  if (!shared) {
    auto chain = restore::OpenSnapshot(path);
    if (!chain.ok()) Fail(cfd, chain.status().message());
    shared = std::make_shared<const SnapshotChain>(std::move(chain).value());
  }
  std::string why = warm->WarmMismatch(*shared);
  std::unique_ptr<Vmm> vm;
  const bool is_warm = why.empty();
  if (is_warm) {
    Status s = warm->RestoreWarm(shared, std::move(plan));
    if (!s.ok()) Fail(cfd, s.message());
    vm = std::move(warm);
  } else {
    Reply(cfd, {{"note", "snapshot " + path + " does not fit the warm VMs (" + why + "): cold start"}});
    warm.reset();
    VmmOptions cold = vopts;
    auto r = Vmm::Restore(path, cold, std::move(plan));
    if (!r.ok()) Fail(cfd, r.status().message());
    vm = std::move(r).value();
  }
  if (remote.restored) remote.restored();
  // Doorbell snapshots record this load (warm or not) in their lineage.
  if (!doorbell.empty()) vm->set_doorbell_snapshot(doorbell);
  {
    std::lock_guard<std::mutex> lock(ps.mu);
    if (!ps.pending.ok()) Fail(cfd, ps.pending.message());
    ps.running = true;
  }
  vm->set_hangup_fd(cfd);
  // The guest's exit is the answer: sent from the vCPU that wrote it, then
  // the process ends (its other threads, the pager's fill and the VM's
  // memory go with it, after the client already has its status).
  Vmm* running = vm.get();
  auto reply_exit = [cfd, running, is_warm, bound_start](int exit_status) {
    std::fflush(stdout);
    Reply(cfd, {{"ok", true},
                {"exit_status", exit_status},
                {"warm", is_warm},
                {"bound", bound_start},
                {"first_entry_ns", running->first_entry_ns()},
                {"generation_id", BytesHex(running->generation_id())}});
    ::_exit(0);
  };
  vm->set_on_guest_exit(reply_exit);
  auto status = vm->Run();
  if (!status.ok()) {
    std::fflush(stdout);
    Fail(cfd, status.status().message());
  }
  reply_exit(*status & 0xff);
  ::_exit(0);  // not reached: reply_exit ends the process
}

// The worker's life: prepare, say ready, wait for a client, serve it.
[[noreturn]] void RunWorker(UniqueFd chan, pid_t server, const ServeOptions& o, const WarmShape& shape,
                            const std::deque<OpenedChain>& opened) {
  // While idle a worker dies with the server; once it has a client it
  // belongs to that client.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != server) ::_exit(0);
  // One malloc arena for the process: the first allocation of each new
  // thread (the vCPUs', the pager's) would otherwise set up an arena of its
  // own, a 128 MiB reservation trimmed by munmap, which on this kind of host
  // (shadow paging) costs a millisecond or more on the way to the guest's
  // first instruction.
  ::mallopt(M_ARENA_MAX, 1);
  VmmOptions vopts;
  vopts.serial = "-";
  vopts.kvm_device = o.kvm_device;
  vopts.tool_version = o.tool_version;
  vopts.dirty_tracking = capture::dirty::Mode::kOff;
  // Told once the worker has its client, whose stderr it then is.
  vopts.report = [](const Status& s) {
    std::fprintf(stderr, "vmsnap load: %s (the VM goes on)\n", s.message().c_str());
  };
  auto warm = Vmm::Prepare(shape, vopts);
  if (!warm.ok()) {
    std::string m = "E" + warm.status().message();
    (void)::send(chan.get(), m.data(), m.size(), MSG_NOSIGNAL);
    ::_exit(1);
  }
  if (o.prepare_remote) o.prepare_remote();
  WorkerDirs dirs;
  if (auto d = UserCacheDir("verified"); d.ok()) dirs.stamps = *d;
  if (auto d = UserCacheDir("images"); d.ok()) dirs.images = *d;
  // Ready ('R', then the path of the snapshot it is bound to, if any) until
  // the server hands it a client ('C' with its descriptor), or asks it to
  // bind to a snapshot ('B' PATH) first.
  Binding binding;
  std::vector<UniqueFd> got;
  for (;;) {
    const std::string ready = "R" + binding.path;
    if (::send(chan.get(), ready.data(), ready.size(), MSG_NOSIGNAL) < 0) ::_exit(0);
    char msg[kMaxPathMessage + 1];
    got.clear();
    ssize_t n = RecvWithFds(chan.get(), msg, sizeof msg, got, 1);
    if (n <= 0) ::_exit(0);  // the server ended
    if (msg[0] == 'C' && got.size() == 1) break;
    if (msg[0] != 'B' || !got.empty()) ::_exit(0);
    if (binding.chain) {
      (void)(*warm)->Unbind();
      binding = Binding{};
    }
    binding = TryBind(**warm, std::string(msg + 1, size_t(n - 1)), opened, dirs);
  }
  ::prctl(PR_SET_PDEATHSIG, 0);
  ServeClient(std::move(got[0]), std::move(chan), std::move(warm).value(), vopts, opened, dirs, o, binding);
}

struct Worker {
  pid_t pid = -1;
  UniqueFd chan;
  size_t shape = 0;  // index into ServeOptions::shapes
  bool ready = false;
  std::string bound;    // the snapshot it said it is bound to ("": none)
  std::string offered;  // the snapshot it was asked to bind to, until it answers
  uint64_t offered_after = 0;  // how many image builds had ended when it was asked
};

// A connection accepted and not yet handed to a worker.
struct Waiting {
  UniqueFd fd;
  // The pool it goes to; unknown while the server (serving several shapes)
  // has not yet seen the request line that names the snapshot.
  std::optional<size_t> shape;
  std::chrono::steady_clock::time_point deadline;
  // Bytes of an incomplete line seen so far: the socket stays readable
  // (peeking consumes nothing), so it is looked at again after a short
  // sleep instead of polled.
  size_t peeked = 0;
  // The snapshot the request names, once seen ("": not seen, or no local
  // path): a worker bound to it is preferred.
  std::string path;
  // With one pool, how long the server waits for the request line to pick a
  // bound worker; then the client goes to any.
  std::chrono::steady_clock::time_point path_by;
};

// With one pool, how long the request line may take after the connection to
// still pick a bound worker (the client sends it right after connecting).
constexpr auto kPathWait = std::chrono::milliseconds(10);
// Snapshots remembered per pool as candidates for binding, most recent first.
constexpr size_t kMaxRecent = 8;

// Whether a snapshot of `regions_total` bytes of memory and `vcpus` vCPUs
// fits the warm VMs of `shape` (the worker checks the rest: WarmMismatch).
bool Fits(const WarmShape& shape, uint64_t regions_total, unsigned vcpus) {
  return shape.mem_size == regions_total && unsigned(shape.vcpus) == vcpus;
}

// With several shapes, the pool a client goes to is the one its snapshot
// fits: the server reads the request line without consuming it (MSG_PEEK
// leaves the line and its descriptors for the worker) and looks the
// snapshot up among those it has opened, opening it if need be. Returns
// nullopt while the line is incomplete; a request that is malformed, names
// no snapshot the server can open, or fits no pool goes to the first pool,
// whose worker answers it (an error, or a cold start it says it made).
// With one pool the line is read the same way, only for its snapshot's path
// (c.path: a worker bound to it is preferred), and waited for at most
// kPathWait.
std::optional<size_t> PickShape(Waiting& c, const std::vector<WarmShape>& shapes, std::deque<OpenedChain>& opened) {
  // The server is one thread: one buffer, not one per look.
  static std::vector<char> buf(kMaxRequestLine + 1);
  const auto until = shapes.size() == 1 ? c.path_by : c.deadline;
  ssize_t n;
  do {
    n = ::recv(c.fd.get(), buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && std::chrono::steady_clock::now() < until) {
    return std::nullopt;
  }
  const char* nl = n > 0 ? static_cast<const char*>(std::memchr(buf.data(), '\n', size_t(n))) : nullptr;
  if (nl == nullptr) {
    const bool final = n <= 0 || size_t(n) == buf.size() || std::chrono::steady_clock::now() >= until;
    if (!final) {
      c.peeked = size_t(n);
      return std::nullopt;
    }
    return 0;
  }
  nlohmann::json req = nlohmann::json::parse(std::string(buf.data(), size_t(nl - buf.data())), nullptr, false);
  if (!req.is_object() || !req.contains("snapshot") || !req["snapshot"].is_string()) return 0;
  const std::string path = req["snapshot"];
  if (path.empty() || path[0] != '/' || path.size() >= kMaxPathMessage) return 0;
  c.path = path;
  if (shapes.size() == 1) return 0;
  std::shared_ptr<const SnapshotChain> chain = Remember(opened, path);
  if (!chain) return 0;
  schema::Manifest::Reader m = chain->leaf().manifest();
  uint64_t total = 0;
  for (auto r : m.getMemory().getRegions()) total += r.getSize();
  for (size_t i = 0; i < shapes.size(); ++i) {
    if (Fits(shapes[i], total, m.getVcpus().size())) return i;
  }
  return 0;
}

// Decompressed images the server builds of the snapshots its clients ask
// for, one at a time, each in a forked process at the lowest CPU priority:
// warm starts of a snapshot whose image is fresh map it (one mapping per
// region, nothing decoded or faulted in from the file on the way to the
// guest's first instruction) where they would otherwise page it in, or map
// a raw file run by run (thousands of mappings per GiB where zero pages cut
// it). The build is off the request path: the worker that asked has its
// client already; the ones forked after the image is stamped find it.
class ImageBuilder {
 public:
  // `max_bytes` (0: no bound) bounds the images in `dir`: see Trim.
  ImageBuilder(std::string dir, uint64_t max_bytes) : cache_(dir), on_(!dir.empty()), max_bytes_(max_bytes) {
    Trim("");
  }
  ~ImageBuilder() { Stop(); }

  // Queues `chain` unless its image is fresh, it is queued or being built,
  // or a build of its files in their present state was already tried.
  void Want(std::shared_ptr<const SnapshotChain> chain) {
    if (!on_ || !chain) return;
    const std::string id = layout::IdToHex(chain->leaf().id());
    timespec now {};
    ::clock_gettime(CLOCK_REALTIME, &now);  // as file times are
    used_[id] = int64_t(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
    const std::string leaf = FileStampOf(chain->leaf().path());
    if (leaf.empty()) return;
    auto tried = tried_.find(id);
    if (tried != tried_.end() && tried->second == leaf) return;
    if (cache_.OpenFresh(*chain).valid()) return;
    tried_[id] = leaf;
    queue_.push_back(std::move(chain));
  }

  // The descriptor to poll while a build runs (it hangs up when the build
  // ends), or -1.
  int fd() const { return done_.get(); }

  // Called when fd() is readable or hung up: that build ended.
  void Ended() {
    const std::string built = building_ ? layout::IdToHex(building_->leaf().id()) : "";
    pid_ = -1;
    done_.Reset();
    building_.reset();
    Trim(built);
  }

  // Forks the next build if none runs. `close_in_child` closes what the
  // server holds (client connections, worker channels) in the builder.
  void Next(const std::function<void()>& close_in_child) {
    if (pid_ >= 0) return;
    std::shared_ptr<const SnapshotChain> chain;
    while (!chain && !queue_.empty()) {
      chain = std::move(queue_.front());
      queue_.pop_front();
      if (!MakeRoom(*chain)) chain.reset();
    }
    if (!chain) return;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return;
    std::fflush(stdout);
    std::fflush(stderr);
    const pid_t server = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(p[0]);
      ::close(p[1]);
      return;
    }
    if (pid == 0) {
      ::close(p[0]);
      close_in_child();
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != server) ::_exit(0);
      (void)::setpriority(PRIO_PROCESS, 0, 19);
      // A failure (a chunk that fails its checksum, a full disk) is the
      // worker's to report when it pages that snapshot in; the image is
      // only an optimisation.
      ::_exit(cache_.Build(*chain).ok() ? 0 : 1);
    }
    ::close(p[1]);
    pid_ = pid;
    done_.Reset(p[0]);
    building_ = std::move(chain);
  }

  // Ends a build in progress and removes its unfinished files.
  void Stop() {
    if (pid_ < 0) return;
    ::kill(pid_, SIGKILL);
    pollfd f{done_.get(), POLLIN, 0};
    (void)::poll(&f, 1, 2000);
    cache_.RemoveUnfinished(*building_, pid_);
    Ended();
  }

 private:
  // Room for `chain`'s image with a tenth of the filesystem kept free
  // (ImageCache::Room): the least recently requested images make way, but
  // none a VM maps. False, said once on stderr, when even that is not
  // enough: the snapshot is paged in, as it would be without images.
  bool MakeRoom(const SnapshotChain& chain) {
    if (cache_.CheckRoom(chain).ok()) return true;
    const int64_t short_by = int64_t(memory::ImageCache::ImageBytes(chain)) - cache_.Room();
    const uint64_t images = cache_.Bytes();
    const uint64_t keep = images > uint64_t(short_by) ? images - uint64_t(short_by) : 0;
    for (const std::string& id : cache_.Trim(keep, used_, "")) tried_.erase(id);
    Status s = cache_.CheckRoom(chain);
    if (!s.ok()) std::fprintf(stderr, "vmsnap serve: %s\n", s.message().c_str());
    return s.ok();
  }

  // With a bound: the least recently requested images go, but none a VM
  // maps and not the one just built (ImageCache::Trim), at start and after
  // each build. A removed image is built again at its next request.
  void Trim(const std::string& built) {
    if (!on_ || max_bytes_ == 0) return;
    for (const std::string& id : cache_.Trim(max_bytes_, used_, built)) tried_.erase(id);
  }

  memory::ImageCache cache_;
  bool on_;
  uint64_t max_bytes_;
  std::map<std::string, int64_t> used_;  // when clients last asked for it (ns since the epoch), by snapshot id
  std::deque<std::shared_ptr<const SnapshotChain>> queue_;
  std::map<std::string, std::string> tried_;  // FileStamp of the leaf, by snapshot id
  pid_t pid_ = -1;
  UniqueFd done_;
  std::shared_ptr<const SnapshotChain> building_;
};

}  // namespace

Status Serve(const ServeOptions& o) {
  if (o.pool < 1) return Status::InvalidArgument("--pool must be at least 1");
  if (o.shapes.empty()) return Status::InvalidArgument("no warm VM shape");
  // Workers are reaped by the kernel; a client that vanishes is no signal.
  ::signal(SIGCHLD, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t stop_set, old_set;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGINT);
  sigaddset(&stop_set, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &stop_set, &old_set);
  UniqueFd sig(::signalfd(-1, &stop_set, SFD_CLOEXEC));
  if (!sig.valid()) return Status::FromErrno(errno, "signalfd");
  VMSNAP_ASSIGN_OR_RETURN(UniqueFd listen_fd, ListenControl(o.socket));
  // Accepted at once: accept() then never blocks the loop.
  ::fcntl(listen_fd.get(), F_SETFL, ::fcntl(listen_fd.get(), F_GETFL) | O_NONBLOCK);
  const pid_t self = ::getpid();
  std::vector<Worker> workers;
  std::deque<Waiting> waiting;
  // Workers with a client, until they say which snapshot it asked for.
  std::vector<UniqueFd> busy;
  std::deque<OpenedChain> opened;
  // Per pool: the snapshots its clients asked for lately (most recent
  // first), which its idle workers are asked to bind to, and those a worker
  // could not bind to (no fresh image, or they fit only by size).
  std::vector<std::deque<std::string>> recent(o.shapes.size());
  std::vector<std::set<std::string>> unbindable(o.shapes.size());
  uint64_t builds_ended = 0;
  std::string image_dir;
  if (o.build_images) {
    if (auto d = UserCacheDir("images"); d.ok()) image_dir = *d;
  }
  ImageBuilder images(image_dir, o.image_cache_size);

  auto spawn = [&](size_t shape) -> Status {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
      return Status::FromErrno(errno, "socketpair");
    }
    std::fflush(stdout);
    std::fflush(stderr);
    pid_t pid = ::fork();
    if (pid < 0) {
      ::close(sv[0]);
      ::close(sv[1]);
      return Status::FromErrno(errno, "fork");
    }
    if (pid == 0) {
      // Nothing of the server's stays open here: an idle worker must see
      // its channel close when the server ends, and no client connection
      // may be held by a process that does not serve it.
      ::close(sv[0]);
      sig.Reset();
      listen_fd.Reset();
      for (Worker& w : workers) w.chan.Reset();
      waiting.clear();
      busy.clear();
      ::signal(SIGCHLD, SIG_DFL);
      ::sigprocmask(SIG_SETMASK, &old_set, nullptr);
      RunWorker(UniqueFd(sv[1]), self, o, o.shapes[shape], opened);
    }
    ::close(sv[1]);
    workers.push_back(Worker{pid, UniqueFd(sv[0]), shape, false, "", ""});
    return Status::Ok();
  };

  Status result;
  for (size_t k = 0; k < o.shapes.size(); ++k) {
    for (int i = 0; i < o.pool && result.ok(); ++i) result = spawn(k);
  }
  while (result.ok()) {
    std::vector<pollfd> fds{{sig.get(), POLLIN, 0}};
    const bool accepting = waiting.size() < kMaxWaiting;
    fds.push_back({accepting ? listen_fd.get() : -1, POLLIN, 0});
    for (const Worker& w : workers) fds.push_back({w.chan.get(), POLLIN, 0});
    const size_t first_busy = fds.size();
    for (const UniqueFd& b : busy) fds.push_back({b.get(), POLLIN, 0});
    const size_t builder_at = fds.size();
    fds.push_back({images.fd(), POLLIN, 0});
    // Clients whose request line the server waits for (several shapes).
    int timeout_ms = -1;
    const auto now = std::chrono::steady_clock::now();
    for (const Waiting& c : waiting) {
      if (c.shape) continue;
      fds.push_back({c.peeked ? -1 : c.fd.get(), POLLIN, 0});
      const auto until = o.shapes.size() == 1 ? c.path_by : c.deadline;
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - now).count();
      const int ms = int(std::clamp<int64_t>(left, 0, c.peeked ? 5 : 60'000));
      timeout_ms = timeout_ms < 0 ? ms : std::min(timeout_ms, ms);
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) < 0) {
      if (errno == EINTR) continue;
      result = Status::FromErrno(errno, "poll");
      break;
    }
    if (fds[0].revents & POLLIN) {
      // Taken, so that unblocking it on the way out does not deliver it.
      signalfd_siginfo si;
      (void)!::read(sig.get(), &si, sizeof si);
      break;
    }
    for (size_t i = 0; i < workers.size(); ++i) {
      if (!(fds[2 + i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char msg[4096];
      ssize_t n = ::recv(workers[i].chan.get(), msg, sizeof msg, MSG_DONTWAIT);
      if (n > 0 && msg[0] == 'R') {
        Worker& w = workers[i];
        w.ready = true;
        w.bound.assign(msg + 1, size_t(n - 1));
        // Not bound to what it was offered (no fresh image, or it does not
        // fit): not offered again until an image build ends. A build that
        // ended after the offer may have made the image it lacked, so that
        // answer no longer counts.
        if (!w.offered.empty() && w.bound != w.offered && w.offered_after == builds_ended) {
          unbindable[w.shape].insert(w.offered);
        }
        w.offered.clear();
      } else if (n > 0 && msg[0] == 'E') {
        result = Status::Kvm("cannot prepare a warm VM: " + std::string(msg + 1, size_t(n - 1)));
      } else if (n == 0 || (n < 0 && errno != EAGAIN)) {
        result = Status::Internal("a warm VM's process (pid " + std::to_string(workers[i].pid) +
                                  ") ended while idle");
      }
    }
    for (size_t i = busy.size(); i-- > 0;) {
      if (!(fds[first_busy + i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char msg[kMaxPathMessage + 1];
      ssize_t n = ::recv(busy[i].get(), msg, sizeof msg, MSG_DONTWAIT);
      if (n < 0 && errno == EAGAIN) continue;
      if (n > 1 && size_t(n) <= kMaxPathMessage && msg[0] == 'P') {
        const std::string path(msg + 1, size_t(n - 1));
        images.Want(Remember(opened, path));
      }
      busy.erase(busy.begin() + long(i));
    }
    if (fds[builder_at].revents & (POLLIN | POLLHUP | POLLERR)) {
      images.Ended();
      ++builds_ended;
      for (auto& u : unbindable) u.clear();
    }
    images.Next([&] {
      sig.Reset();
      listen_fd.Reset();
      for (Worker& w : workers) w.chan.Reset();
      waiting.clear();
      busy.clear();
    });
    if (accepting && (fds[1].revents & POLLIN)) {
      for (;;) {
        int c = ::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) break;
        const auto at = std::chrono::steady_clock::now();
        waiting.push_back(Waiting{UniqueFd(c), std::nullopt, at + std::chrono::seconds(5), 0, "", at + kPathWait});
        if (waiting.size() >= kMaxWaiting) break;
      }
    }
    for (Waiting& c : waiting) {
      if (!c.shape) c.shape = PickShape(c, o.shapes, opened);
    }
    // Hand each client whose pool is known to a ready worker of that pool,
    // in the order they came, and refill that pool at once.
    for (auto it = waiting.begin(); it != waiting.end() && result.ok();) {
      if (!it->shape) {
        ++it;
        continue;
      }
      // A worker bound to the request's snapshot, else an unbound one, else
      // any (which undoes its binding first).
      size_t w = workers.size();
      for (size_t i = 0; i < workers.size(); ++i) {
        const Worker& k = workers[i];
        if (!k.ready || k.shape != *it->shape) continue;
        if (!it->path.empty() && k.bound == it->path) {
          w = i;
          break;
        }
        if (w == workers.size() || (!workers[w].bound.empty() && k.bound.empty())) w = i;
      }
      if (w == workers.size()) {
        ++it;
        continue;
      }
      const size_t shape = workers[w].shape;
      if (!it->path.empty()) {
        std::deque<std::string>& r = recent[shape];
        r.erase(std::remove(r.begin(), r.end(), it->path), r.end());
        r.push_front(it->path);
        while (r.size() > kMaxRecent) r.pop_back();
      }
      Status s = SendFd(workers[w].chan.get(), 'C', it->fd.get());
      if (!s.ok()) {
        // That worker died since it said ready: it is replaced below, and
        // the client waits for the next one.
        ::kill(workers[w].pid, SIGKILL);
      } else {
        busy.push_back(std::move(workers[w].chan));
      }
      workers.erase(workers.begin() + long(w));
      if (s.ok()) it = waiting.erase(it);
      result = spawn(shape);
    }
    // An idle unbound worker is asked to bind to the most recent snapshot
    // of its pool that no other worker of the pool is bound to (or binding),
    // if it has a fresh image; not to an older one instead (it would keep
    // an image the cache's bound may have to remove in use).
    for (Worker& w : workers) {
      if (!w.ready || !w.bound.empty() || !result.ok()) continue;
      for (const std::string& p : recent[w.shape]) {
        bool taken = false;
        for (const Worker& k : workers) {
          taken |= &k != &w && k.shape == w.shape && (k.bound == p || k.offered == p);
        }
        if (taken) continue;
        if (unbindable[w.shape].count(p) != 0) break;
        const std::string m = "B" + p;
        if (::send(w.chan.get(), m.data(), m.size(), MSG_NOSIGNAL | MSG_DONTWAIT) == ssize_t(m.size())) {
          w.ready = false;
          w.offered = p;
          w.offered_after = builds_ended;
        }
        break;
      }
    }
  }
  workers.clear();  // idle workers see their channel close and exit
  images.Stop();
  ::unlink(o.socket.c_str());
  ::sigprocmask(SIG_SETMASK, &old_set, nullptr);
  return result;
}

Status SendLoadRequest(int fd, const std::string& snapshot, int serial_fd, int err_fd,
                       const std::string& doorbell_snapshot) {
  nlohmann::json req{{"cmd", "load"}, {"snapshot", snapshot}};
  if (!doorbell_snapshot.empty()) req["snapshot_on_doorbell"] = doorbell_snapshot;
  const std::string line = req.dump() + "\n";
  // The line is short: one sendmsg carries all of it with the descriptors.
  const int pass[kRequestFds] = {serial_fd, err_fd};
  return SendWithFds(fd, line.data(), line.size(), pass);
}

Result<int> LoadVia(const std::string& socket, const std::string& snapshot, int serial_fd, int err_fd,
                    const std::function<void(const std::string&)>& on_note, const std::string& doorbell_snapshot) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (socket.empty() || socket.size() >= sizeof a.sun_path) {
    return Status::InvalidArgument("socket path '" + socket + "' is empty or too long");
  }
  std::memcpy(a.sun_path, socket.c_str(), socket.size() + 1);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Status::FromErrno(errno, "socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return Status::FromErrno(errno, "cannot connect to " + socket);
  }
  Status sent = SendLoadRequest(fd.get(), snapshot, serial_fd, err_fd, doorbell_snapshot);
  if (!sent.ok()) return Status::Io("sending the request to " + socket + ": " + sent.message());
  ReplyReader replies(fd.get());
  for (;;) {
    auto reply = replies.Next();
    if (!reply.ok()) {
      if (reply.status().code() == Code::kInvalidArgument) return Status::Io("unreadable reply from " + socket);
      return Status::Io(socket + " closed the connection before the guest's exit status");
    }
    nlohmann::json j = nlohmann::json::parse(*reply, nullptr, false);
    if (!j.is_object()) return Status::Io("unreadable reply from " + socket);
    if (j.contains("note") && j["note"].is_string()) {
      if (on_note) on_note(j["note"].get<std::string>());
      continue;
    }
    if (j.value("ok", false) && j.contains("exit_status") && j["exit_status"].is_number_integer()) {
      return j["exit_status"].get<int>();
    }
    if (j.contains("error") && j["error"].is_string()) return Status::Io(j["error"].get<std::string>());
    return Status::Io("unreadable reply from " + socket);
  }
}

}  // namespace vmsnap::vmm
