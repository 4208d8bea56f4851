// SPDX-License-Identifier: MIT
// What mapping a decompressed image over a warm VM's memory costs on this
// host: mmap(MAP_FIXED) of a file over anonymous memory that a KVM memory
// slot already covers (KVM is told to drop its view of the whole range),
// against the same mmap over memory KVM does not know, and the slot's
// registration itself. docs/performance.md quotes it.
//
//   vmsnap_bench_remap GIB FILE      (FILE at least GIB GiB, e.g. sparse)
// prints, for 3 fresh VMs, microseconds of each step.
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

double Us(std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

void* Anonymous(size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("remap: mmap");
    std::exit(1);
  }
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || std::atoi(argv[1]) <= 0) {
    std::fprintf(stderr, "usage: vmsnap_bench_remap GIB FILE\n");
    return 2;
  }
  const size_t size = size_t(std::atoi(argv[1])) << 30;
  const int file = ::open(argv[2], O_RDONLY | O_CLOEXEC);
  const int kvm = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (file < 0 || kvm < 0) {
    std::perror("remap: open");
    return 1;
  }
  using Clock = std::chrono::steady_clock;
  for (int round = 0; round < 3; ++round) {
    const int vm = ::ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) {
      std::perror("remap: KVM_CREATE_VM");
      return 1;
    }
    void* slot_mem = Anonymous(size);
    void* plain_mem = Anonymous(size);
    kvm_userspace_memory_region region{};
    region.memory_size = size;
    region.userspace_addr = uint64_t(uintptr_t(slot_mem));
    const auto t0 = Clock::now();
    if (::ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) != 0) {
      std::perror("remap: KVM_SET_USER_MEMORY_REGION");
      return 1;
    }
    const auto t1 = Clock::now();
    const bool over_slot = ::mmap(slot_mem, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, file, 0) != MAP_FAILED;
    const auto t2 = Clock::now();
    const bool over_plain = ::mmap(plain_mem, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, file, 0) != MAP_FAILED;
    const auto t3 = Clock::now();
    if (!over_slot || !over_plain) {
      std::perror("remap: mmap of the file");
      return 1;
    }
    std::printf("%s GiB: register slot %.0f us, map over the slot %.0f us, map over unregistered memory %.0f us\n",
                argv[1], Us(t0, t1), Us(t1, t2), Us(t2, t3));
    ::munmap(slot_mem, size);
    ::munmap(plain_mem, size);
    ::close(vm);
  }
  return 0;
}
