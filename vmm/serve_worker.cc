// SPDX-License-Identifier: MIT
// See serve_worker.h.
#include "vmm/serve_worker.h"

#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/cache_dir.h"
#include "base/hex.h"
#include "restore/memory/image_cache.h"
#include "vmm/control.h"
#include "vmm/fd_passing.h"

namespace vmsnap::vmm {
namespace {

// How long a worker forked to refill the pool beside a start waits before it
// prepares its VM (RunWorker says why).
constexpr std::chrono::milliseconds kRefillDelay{5};

void Reply(int fd, const nlohmann::json& j) { (void)WriteLine(fd, j.dump()); }

[[noreturn]] void Fail(int client, const std::string& error) {
  Reply(client, {{"ok", false}, {"error", error}});
  ::_exit(0);
}

// Cache directories a worker finds before its client comes.
struct WorkerDirs {
  std::string stamps;  // verified raw snapshots ("" if unavailable)
  std::string images;  // decompressed images ("" if unavailable)
};

// As `vmsnap load`: a pager error before the VM runs is Restore's to
// explain; once it runs, it ends the VM (a vCPU waiting for that page
// cannot be woken with a wrong one). One per process: a worker's VM runs
// one load, made ahead when it binds or for its client.
struct PagerState {
  std::mutex mu;
  bool running = false;
  Status pending;
  int client = -1;  // the client's connection, once there is one
};
PagerState& Pager() {
  static PagerState ps;
  return ps;
}

// How a worker loads a snapshot, bound ahead or for its client: lazily,
// with a raw file mapped (verified once per file state) and, for a local
// snapshot, a fresh decompressed image mapped (`vmsnap load --memory
// shared` or the server builds it), else paged in; a store URL's through
// `fetch`. The VM is never destroyed: the process ends with _exit while
// the pager may still fill.
LoadPlan WorkerPlan(const WorkerDirs& dirs, bool local, memory::ChunkFetchFn fetch) {
  LoadPlan plan;
  plan.lazy = true;
  plan.on_error = [](const std::string& message) {
    PagerState& ps = Pager();
    int client = -1;
    {
      std::lock_guard<std::mutex> lock(ps.mu);
      if (!ps.running) {
        ps.pending = Status::Io(message);
        return;
      }
      client = ps.client;
    }
    std::fflush(stdout);
    Fail(client, "stopping the VM: " + message);
  };
  plan.map_file = !fetch;
  plan.verified_dir = dirs.stamps;
  if (local) plan.image_dir = dirs.images;
  plan.fetch = std::move(fetch);
  return plan;
}

// What an idle worker restored ahead (Vmm::Bind): a snapshot, its fresh
// image mapped over the VM's memory or, without one, paged in with the fill
// held until the start; and the state of every file that binding rests on,
// so that a request sees with a few stats whether it still holds (an image
// built since is one such change: the binding is then made again, mapped).
struct Binding {
  std::string path;  // as the server named it
  std::shared_ptr<const SnapshotChain> chain;
  FileStates files;  // BindingFiles, when bound
  bool Holds() const { return chain && files.Unchanged(); }
};

// Why a warm VM whose binding could not be undone starts its client cold.
std::string UndoFailed(const Binding& binding, const Status& s) {
  return "the warm VM could not undo its binding to " + binding.path + " (" + s.message() + ")";
}

// Binds the idle `warm` VM to `path` if the snapshot fits it: its fresh
// image mapped, else paged in with the pager's fill held until the start
// (the VM then holds only the pages its restore touched: the generation
// ID's). Returns an empty binding otherwise.
Binding TryBind(Vmm& warm, const std::string& path, const OpenedChains& opened, const WorkerDirs& dirs) {
  if (dirs.images.empty() || path.empty() || path[0] != '/') return {};
  std::optional<OpenedChain> opened_now;
  const OpenedChain* snapshot = opened.Find(path);
  if (!snapshot && (opened_now = OpenChain(path))) snapshot = &*opened_now;
  if (!snapshot || !warm.WarmMismatch(*snapshot->chain).empty()) return {};
  Binding b;
  b.path = path;
  b.files = BindingFiles(*snapshot, dirs.images);
  // Held until Bind returns: a fresh image stays (ImageCache::Trim removes
  // no image open for use) between this look and the load's mapping.
  UniqueFd image = memory::ImageCache(dirs.images).OpenFresh(*snapshot->chain);
  LoadPlan plan = WorkerPlan(dirs, true, nullptr);
  plan.hold_fill = true;
  if (!warm.Bind(snapshot->chain, std::move(plan)).ok()) return {};
  b.chain = snapshot->chain;
  return b;
}

// A worker with its client: reads the request, runs the guest, replies, and
// ends the process without unwinding anything (the client already has its
// exit status; the kernel releases the VM's memory after that).
[[noreturn]] void ServeClient(UniqueFd client, UniqueFd chan, std::unique_ptr<Vmm> warm, const VmmOptions& vopts,
                              const OpenedChains& opened, const WorkerDirs& dirs, const ServeOptions& o,
                              const Binding& binding, std::string cold_why) {
  const int cfd = client.get();
  {
    std::lock_guard<std::mutex> lock(Pager().mu);
    Pager().client = cfd;
  }
  timeval tv{5, 0};
  ::setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(cfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string line;
  std::vector<UniqueFd> fds;
  // Not zeroed: 64 KiB written for nothing would be 16 page faults on the
  // way to the guest.
  auto buf = std::make_unique_for_overwrite<char[]>(kMaxRequestLine + 1);
  for (;;) {
    ssize_t n = RecvWithFds(cfd, buf.get(), kMaxRequestLine + 1, fds, kRequestFds);
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) Fail(cfd, "no complete request line within 5 s");
      ::_exit(0);  // the client went away before asking anything
    }
    line.append(buf.get(), size_t(n));
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
  if (fds.size() != kRequestFds) {
    Fail(cfd, "a load request carries 2 descriptors (serial output, messages); got " + std::to_string(fds.size()));
  }
  // The guest's serial output and our messages go where the client's would.
  if (::dup2(fds[0].get(), STDOUT_FILENO) < 0 || ::dup2(fds[1].get(), STDERR_FILENO) < 0) {
    Fail(cfd, std::string("dup2: ") + std::strerror(errno));
  }
  fds.clear();

  // A store URL: a local cache file that fills as the pager asks.
  RemoteSnapshot remote;
  if (remote_url) {
    auto r = o.open_remote(path);
    if (!r.ok()) Fail(cfd, r.status().message());
    remote = std::move(r).value();
    path = remote.path;
  }
  LoadPlan plan = WorkerPlan(dirs, !remote_url, remote.fetch);

  // The binding is used only for the very files it was made from; else it
  // is undone and the snapshot restored as by an unbound VM. A VM whose
  // binding could not be undone is not used: the snapshot starts cold.
  const bool bound_start = cold_why.empty() && binding.chain && !remote_url && path == binding.path && binding.Holds();
  if (cold_why.empty() && binding.chain && !bound_start) {
    Status s = warm->Unbind();
    if (!s.ok()) cold_why = UndoFailed(binding, s);
  }
  // The server opens a local file for the workers it forks from now on,
  // and builds its image. Told once this VM's binding is undone: a build
  // that needs room may remove the image it mapped.
  if (!remote_url && path.size() < kMaxPathMessage) {
    const std::string m = "P" + path;
    (void)::send(chan.get(), m.data(), m.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  chan.Reset();
  if (!bound_start) {
    // What an undone binding's load said is not this load's.
    std::lock_guard<std::mutex> lock(Pager().mu);
    Pager().pending = Status::Ok();
  }
  std::shared_ptr<const SnapshotChain> shared;
  if (bound_start) {
    shared = binding.chain;
  } else if (const OpenedChain* held = opened.Find(path)) {
    shared = held->chain;
  } else {
    auto chain = restore::OpenSnapshot(path);
    if (!chain.ok()) Fail(cfd, chain.status().message());
    shared = std::make_shared<const SnapshotChain>(std::move(chain).value());
  }
  if (cold_why.empty()) {
    const std::string why = warm->WarmMismatch(*shared);
    if (!why.empty()) cold_why = "snapshot " + path + " does not fit the warm VMs (" + why + ")";
  }
  std::unique_ptr<Vmm> vm;
  const bool is_warm = cold_why.empty();
  if (is_warm) {
    Status s = warm->RestoreWarm(shared, std::move(plan));
    if (!s.ok()) Fail(cfd, s.message());
    vm = std::move(warm);
  } else {
    Reply(cfd, {{"note", cold_why + ": cold start"}});
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
    PagerState& ps = Pager();
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
                {"first_exit_ns", running->first_exit_ns()},
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

}  // namespace

FileStates BindingFiles(const OpenedChain& snapshot, const std::string& image_dir) {
  FileStates files = snapshot.files;
  const memory::ImageCache cache(image_dir);
  files.Add(cache.ImagePath(*snapshot.chain));
  files.Add(cache.StampPath(*snapshot.chain));
  return files;
}

[[noreturn]] void RunWorker(UniqueFd chan, pid_t server, const ServeOptions& o, const WarmShape& shape,
                            const OpenedChains& opened, bool yield) {
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
  // A worker is forked as soon as the pool hands one out, to replace it.
  // Just forked, the scheduler ran it ahead of the worker taking that start
  // (traced on 2 CPUs: 1.3-1.9 ms of VM creation and memory slots for 4 GiB
  // before the start's first KVM_RUN), or it held the other CPU while the
  // client waited for the guest's first output. Asleep for a moment, longer
  // than that start's way to its guest's first output on an idle host (1-2
  // ms), it leaves them the CPUs; the pool is ready that much later. Not
  // when clients wait for it, nor for the first pool.
  if (yield) std::this_thread::sleep_for(kRefillDelay);
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
  // bind to a snapshot ('B' PATH) or to undo its binding ('U') first.
  Binding binding;
  // Why the warm VM cannot be used ("": it can): its client starts cold.
  std::string cold_why;
  std::vector<UniqueFd> got;
  for (;;) {
    const std::string ready = "R" + binding.path;
    if (::send(chan.get(), ready.data(), ready.size(), MSG_NOSIGNAL) < 0) ::_exit(0);
    char msg[kMaxPathMessage + 1];
    got.clear();
    ssize_t n = RecvWithFds(chan.get(), msg, sizeof msg, got, 1);
    if (n <= 0) ::_exit(0);  // the server ended
    if (msg[0] == 'C' && got.size() == 1) break;
    if ((msg[0] != 'B' && msg[0] != 'U') || !got.empty()) ::_exit(0);
    if (binding.chain) {
      Status s = (*warm)->Unbind();
      if (!s.ok()) cold_why = UndoFailed(binding, s);
      binding = Binding{};
    }
    if (msg[0] == 'B' && cold_why.empty()) {
      binding = TryBind(**warm, std::string(msg + 1, size_t(n - 1)), opened, dirs);
    }
    // Unbound, it waits as a fresh warm VM does: with the pager armed for
    // a client whose snapshot pages in (an undone load took it).
    if (!binding.chain && cold_why.empty()) (*warm)->ArmPager();
  }
  ::prctl(PR_SET_PDEATHSIG, 0);
  ServeClient(std::move(got[0]), std::move(chan), std::move(warm).value(), vopts, opened, dirs, o, binding,
              cold_why);
}

}  // namespace vmsnap::vmm
