// SPDX-License-Identifier: MIT
// Times a librados client's start call by call, as `vmsnap load rados://`
// makes it (open the library, configure, connect, open the pool, first and
// second read): what a fresh process pays before it has a snapshot's layout,
// whatever vmsnap does around it. bench/store.py runs it.
//
//   vmsnap_bench_rados_start POOL OBJECT      (cluster from CEPH_CONF)
// prints one line: milliseconds per step, "dlopen=… create=… …".
#include <dlfcn.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

using Handle = void*;
double Ms(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

template <typename Fn>
Fn Sym(void* lib, const char* name) {
  void* p = ::dlsym(lib, name);
  if (p == nullptr) {
    std::fprintf(stderr, "rados_start: librados has no %s\n", name);
    std::exit(2);
  }
  return reinterpret_cast<Fn>(p);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: vmsnap_bench_rados_start POOL OBJECT\n");
    return 2;
  }
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  // As the store opens it (store/dl_library.h).
  void* lib = ::dlopen("librados.so.2", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::fprintf(stderr, "rados_start: %s\n", ::dlerror());
    return 2;
  }
  const auto t1 = Clock::now();
  auto create = Sym<int (*)(Handle*, const char*)>(lib, "rados_create");
  auto conf_set = Sym<int (*)(Handle, const char*, const char*)>(lib, "rados_conf_set");
  auto read_file = Sym<int (*)(Handle, const char*)>(lib, "rados_conf_read_file");
  auto parse_env = Sym<int (*)(Handle, const char*)>(lib, "rados_conf_parse_env");
  auto connect = Sym<int (*)(Handle)>(lib, "rados_connect");
  auto ioctx_create = Sym<int (*)(Handle, const char*, Handle*)>(lib, "rados_ioctx_create");
  auto read = Sym<int (*)(Handle, const char*, char*, size_t, uint64_t)>(lib, "rados_read");
  Handle cluster = nullptr, io = nullptr;
  // The settings vmsnap's client makes (store/rados_store.cc).
  int rc = create(&cluster, nullptr);
  if (rc == 0) {
    conf_set(cluster, "err_to_stderr", "false");
    conf_set(cluster, "log_to_stderr", "false");
    rc = read_file(cluster, nullptr);
    conf_set(cluster, "admin_socket", "");
    conf_set(cluster, "log_file", "");
    parse_env(cluster, nullptr);
  }
  const auto t2 = Clock::now();
  if (rc == 0) rc = connect(cluster);
  const auto t3 = Clock::now();
  if (rc == 0) rc = ioctx_create(cluster, argv[1], &io);
  const auto t4 = Clock::now();
  static char buf[1 << 20];
  if (rc == 0) rc = read(io, argv[2], buf, sizeof buf, 0) < 0 ? -1 : 0;
  const auto t5 = Clock::now();
  if (rc == 0) rc = read(io, argv[2], buf, sizeof buf, 0) < 0 ? -1 : 0;
  const auto t6 = Clock::now();
  if (rc != 0) {
    std::fprintf(stderr, "rados_start: a call failed (%d)\n", rc);
    return 1;
  }
  std::printf("dlopen=%.2f create=%.2f connect=%.2f ioctx=%.2f read=%.2f read2=%.2f total=%.2f\n", Ms(t0, t1),
              Ms(t1, t2), Ms(t2, t3), Ms(t3, t4), Ms(t4, t5), Ms(t5, t6), Ms(t0, t6));
  std::fflush(stdout);
  // Like a command that ends: no shutdown (librados's is slow and nothing
  // depends on it here).
  std::_Exit(0);
}
