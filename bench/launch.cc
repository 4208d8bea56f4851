// SPDX-License-Identifier: MIT
// Starts N copies of one command at once and times each one's output, as a
// fleet manager would start clones: bench/fleet.py's clone measurement. A
// loop in Python needs about a millisecond of CPU per start and, among up to
// fifty busy clones on two cores, took most of the measured time; this one
// forks them all and then only waits.
//
//   vmsnap_bench_launch N PROGRAM [ARG...]
//
// Each copy's stdout is a pipe of its own. Once every copy has printed its
// first byte ("started") and then the clone guest's whole output, "\n"
// then "w\n" (its memory written), prints one JSON line:
//   {"spawned_s": S, "started_s": [...], "written_s": [...], "pids": [...]}
// (seconds from just before the first spawn), then waits until its stdin
// ends and kills every copy. Exits 2 on bad arguments, 1 if a copy ended
// its output early or printed something else.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
const std::string kOutput = "\nw\n";  // bench/clone_guest.S: started, then written

struct Copy {
  pid_t pid = -1;
  int out = -1;       // read end of its stdout
  std::string head;   // its first bytes
  double started = -1;
  double written = -1;
};

void KillAll(std::vector<Copy>& copies) {
  for (Copy& c : copies) {
    if (c.pid > 0) ::kill(c.pid, SIGKILL);
  }
  for (Copy& c : copies) {
    if (c.pid > 0) ::waitpid(c.pid, nullptr, 0);
  }
}

std::string List(const std::vector<Copy>& copies, double Copy::*field) {
  std::string s = "[";
  char num[32];
  for (size_t i = 0; i < copies.size(); ++i) {
    std::snprintf(num, sizeof num, "%s%.6f", i ? ", " : "", copies[i].*field);
    s += num;
  }
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc >= 3 ? std::atoi(argv[1]) : 0;
  if (n <= 0 || n > 4096) {
    std::fprintf(stderr, "usage: vmsnap_bench_launch N PROGRAM [ARG...]\n");
    return 2;
  }
  std::vector<Copy> copies(static_cast<size_t>(n));
  const auto t0 = Clock::now();
  auto since = [&] { return std::chrono::duration<double>(Clock::now() - t0).count(); };
  size_t pending = copies.size();
  std::vector<pollfd> fds(copies.size());
  // Reads what the copies printed, waiting at most `timeout_ms`; false if
  // one ended early or printed something else.
  auto drain = [&](int timeout_ms) {
    for (size_t i = 0; i < copies.size(); ++i) {
      fds[i] = {copies[i].written < 0 ? copies[i].out : -1, POLLIN, 0};
    }
    if (::poll(fds.data(), fds.size(), timeout_ms) <= 0) return true;
    for (size_t i = 0; i < copies.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP))) continue;
      Copy& c = copies[i];
      char buf[64];
      const ssize_t got = ::read(c.out, buf, sizeof buf);
      const double t = since();
      if (got > 0) {
        if (c.head.empty()) c.started = t;
        c.head.append(buf, size_t(got));
      }
      if (got <= 0 || kOutput.compare(0, c.head.size(), c.head) != 0) {
        std::fprintf(stderr, "launch: copy %zu (pid %d) printed %zu bytes, not the clone guest's output\n", i,
                     int(c.pid), c.head.size());
        return false;
      }
      if (c.head.size() == kOutput.size()) {
        c.written = t;
        --pending;
      }
    }
    return true;
  };
  for (Copy& c : copies) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) {
      std::perror("launch: pipe");
      KillAll(copies);
      return 1;
    }
    // fork, not posix_spawn: posix_spawn's vfork holds this loop until the
    // copy has exec'd, so the loop would wait for a CPU once per copy.
    c.pid = ::fork();
    if (c.pid == 0) {
      ::dup2(p[1], 1);
      ::execv(argv[2], argv + 2);
      _exit(127);
    }
    ::close(p[1]);
    c.out = p[0];
    if (c.pid < 0) {
      std::perror("launch: fork");
      KillAll(copies);
      return 1;
    }
    // The first copies may print before the last is forked.
    if (!drain(0)) {
      KillAll(copies);
      return 1;
    }
  }
  const double spawned = since();
  while (pending > 0) {
    if (!drain(-1)) {
      KillAll(copies);
      return 1;
    }
  }
  std::string pids = "[";
  for (size_t i = 0; i < copies.size(); ++i) pids += (i ? ", " : "") + std::to_string(copies[i].pid);
  pids += "]";
  std::printf("{\"spawned_s\": %.6f, \"started_s\": %s, \"written_s\": %s, \"pids\": %s}\n", spawned,
              List(copies, &Copy::started).c_str(), List(copies, &Copy::written).c_str(), pids.c_str());
  std::fflush(stdout);
  char c;
  while (::read(0, &c, 1) > 0) {
  }
  KillAll(copies);
  return 0;
}
