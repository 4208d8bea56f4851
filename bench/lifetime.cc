// SPDX-License-Identifier: MIT
// Runs one command and prints how long its process lived, from posix_spawn
// to its exit, in seconds: bench/fleet.py's "whole `load`" measurement.
// Python's subprocess.run around the same command adds its own set-up and
// wake-up (about 0.3 ms on the 2-CPU test host: 1.16 against 0.86 ms for
// /bin/true), which is the interpreter's, not the measured program's.
//
//   vmsnap_bench_lifetime PROGRAM [ARG...]
//
// The command inherits this program's stdin, stdout and stderr. Prints
// "SECONDS EXIT" (EXIT: the exit status, or 128 + the signal that ended
// it) and exits 0; exits 2 when the command could not be started.
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

extern char** environ;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: vmsnap_bench_lifetime PROGRAM [ARG...]\n");
    return 2;
  }
  const auto t0 = std::chrono::steady_clock::now();
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, argv[1], nullptr, nullptr, argv + 1, environ);
  if (rc != 0) {
    std::fprintf(stderr, "vmsnap_bench_lifetime: cannot start %s: %s\n", argv[1], std::strerror(rc));
    return 2;
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - t0;
  const int exit = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  std::printf("%.9f %d\n", took.count(), exit);
  return 0;
}
