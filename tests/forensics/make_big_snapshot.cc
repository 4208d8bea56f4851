// SPDX-License-Identifier: MIT
// Writes an x86_64 snapshot of a given memory size with generated contents (3
// of every 4 MiB filled with a compressible pattern, the 4th left zero), for
// bench/export_rss.sh. The memory is staged in a sparse file beside the output
// and mapped, so the generator itself needs little RAM whatever the size.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "format/writer.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUT.vmsnap SIZE_MIB\n", argv[0]);
    return 2;
  }
  const std::string out = argv[1];
  const uint64_t mib = std::strtoull(argv[2], nullptr, 10);
  const uint64_t size = mib << 20;
  if (mib == 0) {
    std::fprintf(stderr, "SIZE_MIB must be positive\n");
    return 2;
  }
  const std::string staging = out + ".staging";
  int fd = ::open(staging.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    std::perror(staging.c_str());
    return 2;
  }
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t m = 0; m < mib; ++m) {
    if (m % 4 == 3) continue;  // stays a hole: zero pages
    for (uint64_t off = 0; off < buf.size(); off += 8) {
      const uint64_t v = ((m << 20) + off) >> 12;  // page number, repeated through the page
      std::memcpy(&buf[off], &v, 8);
    }
    if (::pwrite(fd, buf.data(), buf.size(), static_cast<off_t>(m << 20)) != static_cast<ssize_t>(buf.size())) {
      std::perror("pwrite");
      return 2;
    }
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    std::perror("mmap");
    return 2;
  }
  int rc = 0;
  {
    vmsnap::WriterOptions opt;
    auto w = vmsnap::SnapshotWriter::Create(out, opt);
    if (!w.ok()) {
      std::fprintf(stderr, "%s\n", w.status().message().c_str());
      return 2;
    }
    auto m = (*w)->manifest();
    m.setArch(vmsnap::schema::Arch::X8664);
    auto mem = m.initMemory();
    mem.setPageSize(4096);
    auto regions = mem.initRegions(1);
    regions[0].setSize(size);
    regions[0].setName("ram");
    auto v = m.initVcpus(1)[0].initX8664();
    v.initRegs().setRip(0x100000);
    v.initSregs().setCr0(0x11);
    m.initVm().initX8664();
    vmsnap::Status s = (*w)->AddMemory(0, static_cast<const uint8_t*>(map), size);
    if (s.ok()) s = (*w)->Commit();
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.message().c_str());
      rc = 2;
    }
  }
  ::munmap(map, size);
  ::close(fd);
  ::unlink(staging.c_str());
  return rc;
}
