// SPDX-License-Identifier: MIT
// The warm pool's server (see serve.h). It only accepts connections and
// hands each one to a ready worker over a socketpair; each worker is a
// forked process that prepared its own KVM VM and serves one client
// (serve_worker.h). The server forks a replacement as soon as a worker is
// taken, asks idle workers to bind to the snapshots clients asked for
// lately, and builds those snapshots' images (image_builder.h).
#include "vmm/serve.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>
#include <map>
#include <string>
#include <vector>

#include "base/cache_dir.h"
#include "format/layout.h"
#include "vmm/control.h"
#include "vmm/fd_passing.h"
#include "vmm/image_builder.h"
#include "vmm/opened_chains.h"
#include "vmm/serve_worker.h"

namespace vmsnap::vmm {
namespace {

// Connections accepted while no worker is ready wait here (the pool is
// being refilled); beyond this the listen backlog holds them.
constexpr size_t kMaxWaiting = 64;

// How often the files of idle workers' bindings are looked at: a binding
// whose snapshot or image changed is undone, so that its image can go and
// the worker be bound again.
constexpr auto kBindingCheck = std::chrono::seconds(1);

// A snapshot a worker is asked to bind to, as the server finds it then.
struct Offer {
  std::string path;   // "": none
  std::string image;  // the snapshot id of its image ("": it could not be opened)
  FileStates files;   // BindingFiles (the path alone if it could not be opened)
};

struct Worker {
  pid_t pid = -1;
  UniqueFd chan;
  size_t shape = 0;  // index into ServeOptions::shapes
  bool ready = false;
  Offer offered;      // what it was asked to bind to, until it answers
  Offer binding;      // what it said it is bound to, as offered (path "": none)
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
std::optional<size_t> PickShape(Waiting& c, const std::vector<WarmShape>& shapes, OpenedChains& opened) {
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
  const OpenedChain* snapshot = opened.Remember(path);
  if (!snapshot) return 0;
  schema::Manifest::Reader m = snapshot->chain->leaf().manifest();
  uint64_t total = 0;
  for (auto r : m.getMemory().getRegions()) total += r.getSize();
  for (size_t i = 0; i < shapes.size(); ++i) {
    if (Fits(shapes[i], total, m.getVcpus().size())) return i;
  }
  return 0;
}

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
  OpenedChains opened;
  // Per pool: the snapshots its clients asked for lately (most recent
  // first), which its idle workers are asked to bind to, and those a worker
  // could not bind to (no fresh image, or they fit only by size), with
  // their files as they were when offered: offered again once those change
  // (an image built or removed, by this server or another program, or the
  // snapshot replaced).
  std::vector<std::deque<std::string>> recent(o.shapes.size());
  std::vector<std::map<std::string, FileStates>> unbindable(o.shapes.size());
  // Where the workers find images, built here or not.
  std::string image_dir;
  if (auto d = UserCacheDir("images"); d.ok()) image_dir = *d;
  ImageBuilder images(o.build_images ? image_dir : "", o.image_cache_size);
  auto make_offer = [&](const std::string& path) {
    Offer offer{path, "", {}};
    if (const OpenedChain* snapshot = opened.Remember(path); snapshot && !image_dir.empty()) {
      offer.image = layout::IdToHex(snapshot->chain->leaf().id());
      offer.files = BindingFiles(*snapshot, image_dir);
    } else {
      offer.files.Add(path);
    }
    return offer;
  };
  // Asks idle `w` to undo its binding; it is ready again once it says so.
  auto release = [](Worker& w) {
    if (::send(w.chan.get(), "U", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1) return;
    w.ready = false;
    w.offered = Offer{};
  };
  auto next_check = std::chrono::steady_clock::now() + kBindingCheck;

  // `yield`: the refill of a start no other client waits behind
  // (RunWorker).
  auto spawn = [&](size_t shape, bool yield) -> Status {
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
      RunWorker(UniqueFd(sv[1]), self, o, o.shapes[shape], opened, yield);
    }
    ::close(sv[1]);
    workers.push_back(Worker{pid, UniqueFd(sv[0]), shape, false, {}, {}});
    return Status::Ok();
  };

  Status result;
  for (size_t k = 0; k < o.shapes.size(); ++k) {
    for (int i = 0; i < o.pool && result.ok(); ++i) result = spawn(k, false);
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
    // Idle bound workers, whose bindings are looked at in time.
    if (std::any_of(workers.begin(), workers.end(), [](const Worker& w) { return w.ready && !w.binding.path.empty(); })) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(next_check - now).count();
      const int ms = int(std::clamp<int64_t>(left, 0, 60'000));
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
        const std::string bound(msg + 1, size_t(n - 1));
        // Not bound to what it was offered (no fresh image, or it does not
        // fit): not offered again until its files change. They are those
        // of before the offer: an image built since shows as a change.
        // A worker binds only to what it is offered.
        if (bound == w.offered.path) {
          w.binding = std::move(w.offered);
        } else {
          if (!w.offered.path.empty()) {
            unbindable[w.shape].insert_or_assign(w.offered.path, std::move(w.offered.files));
          }
          w.binding = Offer{bound, "", {}};
        }
        w.offered = Offer{};
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
        if (const OpenedChain* snapshot = opened.Remember(path)) images.Want(snapshot->chain);
      }
      busy.erase(busy.begin() + long(i));
    }
    if (fds[builder_at].revents & (POLLIN | POLLHUP | POLLERR)) {
      images.Ended();
    }
    // A binding whose snapshot or image changed is undone while idle: its
    // image (and a replaced file) can go, and the worker is bound again.
    if (std::chrono::steady_clock::now() >= next_check) {
      for (Worker& w : workers) {
        if (w.ready && !w.binding.path.empty() && !w.binding.files.Unchanged()) release(w);
      }
      next_check = std::chrono::steady_clock::now() + kBindingCheck;
    }
    // Images an idle worker is bound to make way for a build that needs
    // their room, as unmapped ones do.
    auto release_images = [&](const std::vector<std::string>& ids) {
      bool letting_go = false;
      for (Worker& w : workers) {
        if (w.binding.image.empty() || std::find(ids.begin(), ids.end(), w.binding.image) == ids.end()) continue;
        if (w.ready) release(w);
        letting_go |= !w.ready;
      }
      return letting_go;
    };
    images.Next(
        [&] {
          sig.Reset();
          listen_fd.Reset();
          for (Worker& w : workers) w.chan.Reset();
          waiting.clear();
          busy.clear();
        },
        release_images);
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
        if (!it->path.empty() && k.binding.path == it->path) {
          w = i;
          break;
        }
        if (w == workers.size() || (!workers[w].binding.path.empty() && k.binding.path.empty())) w = i;
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
        while (r.size() > kMaxRecent) {
          unbindable[shape].erase(r.back());  // never offered again: nothing to remember
          r.pop_back();
        }
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
      result = spawn(shape, waiting.empty());
    }
    // An idle unbound worker is asked to bind to the most recent snapshot
    // of its pool that no other worker of the pool is bound to (or binding),
    // if it has a fresh image; not to an older one instead (it would keep
    // an image the cache's bound may have to remove in use). None while a
    // build waits for bound workers to let go of images.
    for (Worker& w : workers) {
      if (!w.ready || !w.binding.path.empty() || !result.ok() || images.making_room()) continue;
      for (const std::string& p : recent[w.shape]) {
        bool taken = false;
        for (const Worker& k : workers) {
          taken |= &k != &w && k.shape == w.shape && (k.binding.path == p || k.offered.path == p);
        }
        if (taken) continue;
        auto no = unbindable[w.shape].find(p);
        if (no != unbindable[w.shape].end()) {
          if (no->second.Unchanged()) break;
          unbindable[w.shape].erase(no);
        }
        // Its files before the offer: a change while the worker binds shows.
        Offer next = make_offer(p);
        const std::string m = "B" + p;
        if (::send(w.chan.get(), m.data(), m.size(), MSG_NOSIGNAL | MSG_DONTWAIT) == ssize_t(m.size())) {
          w.ready = false;
          w.offered = std::move(next);
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

}  // namespace vmsnap::vmm
