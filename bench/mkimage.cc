// SPDX-License-Identifier: MIT
// Deterministic guest memory image for the benchmark (docs/performance.md,
// "The memory image"): pages in runs of 1-64, each run zero (1/2), text-like
// (1/4) or random (1/4), from a fixed-seed xorshift64* generator, so every run
// of the benchmark and every peer sees the same bytes.
//
//   vmsnap_bench_mkimage OUTPUT SIZE_MIB [SEED]
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr size_t kPage = 4096;

struct Rng {
  uint64_t s;
  uint64_t Next() {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
};

// Words of log-file and source-code flavour: pages of them compress about as
// well as the text, code and heap data of a real guest (zstd -3: ~3-4x).
const char* const kWords[] = {
    "the",    "of",      "and",    "to",      "in",      "is",     "for",    "that",
    "kernel", "memory",  "page",   "error",   "return",  "struct", "int",    "const",
    "void",   "static",  "if",     "else",    "while",   "unsigned", "long", "char",
    "INFO",   "WARN",    "DEBUG",  "request", "server",  "client", "user",   "session",
    "0x7f3a", "1024",    "200",    "GET",     "POST",    "/api/v1/items", "HTTP/1.1", "ms",
    "buffer", "offset",  "length", "size",    "count",   "value",  "key",    "name",
    "main",   "thread",  "lock",   "unlock",  "queue",   "node",   "next",   "prev",
    "{",      "}",       "(",      ");",      "=",       "==",     "+=",     "->"};
constexpr size_t kNumWords = sizeof(kWords) / sizeof(kWords[0]);

void TextPage(Rng& rng, uint8_t* p) {
  size_t i = 0, col = 0;
  while (i < kPage) {
    const uint64_t r = rng.Next();
    const char* w = kWords[r % kNumWords];
    for (const char* c = w; *c && i < kPage; ++c, ++col) p[i++] = uint8_t(*c);
    if (i < kPage) {
      const bool nl = col > 60 + (r >> 40) % 20;
      p[i++] = nl ? '\n' : ' ';
      col = nl ? 0 : col + 1;
    }
  }
}

void RandomPage(Rng& rng, uint8_t* p) {
  for (size_t i = 0; i < kPage; i += 8) {
    const uint64_t v = rng.Next();
    std::memcpy(p + i, &v, 8);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s OUTPUT SIZE_MIB [SEED]\n", argv[0]);
    return 2;
  }
  const uint64_t pages = std::strtoull(argv[2], nullptr, 10) * (1 << 20) / kPage;
  Rng rng{argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 0x5eed5eed5eedull};
  const int fd = ::open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(argv[1]);
    return 2;
  }
  std::vector<uint8_t> buf(1024 * kPage);
  size_t fill = 0;
  uint64_t counts[3] = {0, 0, 0};
  uint64_t p = 0;
  while (p < pages) {
    const uint64_t r = rng.Next();
    const uint64_t run = std::min<uint64_t>(1 + (r >> 8) % 64, pages - p);
    const unsigned q = unsigned(r & 3);  // 0,1: zero; 2: text; 3: random
    const int kind = q < 2 ? 0 : int(q) - 1;
    counts[kind] += run;
    for (uint64_t k = 0; k < run; ++k, ++p) {
      uint8_t* page = buf.data() + fill;
      if (kind == 0) std::memset(page, 0, kPage);
      else if (kind == 1) TextPage(rng, page);
      else RandomPage(rng, page);
      fill += kPage;
      if (fill == buf.size()) {
        if (::write(fd, buf.data(), fill) != ssize_t(fill)) {
          std::perror("write");
          return 2;
        }
        fill = 0;
      }
    }
  }
  if (fill && ::write(fd, buf.data(), fill) != ssize_t(fill)) {
    std::perror("write");
    return 2;
  }
  if (::close(fd) != 0) {
    std::perror("close");
    return 2;
  }
  std::printf("{\"pages\": %llu, \"zero\": %llu, \"text\": %llu, \"random\": %llu}\n",
              (unsigned long long)pages, (unsigned long long)counts[0],
              (unsigned long long)counts[1], (unsigned long long)counts[2]);
  return 0;
}
