// SPDX-License-Identifier: MIT
// Guest memory loaders against snapshots written by the real writer: every page
// read back (by touching it from several threads, as vCPUs would) is exactly
// the saved page; eager and lazy agree; a corrupt chunk is named and never
// handed to the faulting thread.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/mapping.h"
#include "format/chain.h"
#include "format/reader.h"
#include "format/writer.h"
#include "restore/memory/blocks.h"
#include "restore/memory/loader.h"
#include "restore/memory/vmm_loader.h"

namespace vmsnap::memory {
namespace {

constexpr uint64_t kPage = 4096;
using Bytes = std::vector<uint8_t>;

// A death test's child runs the fixture again in a process that dies
// without destructors, so its directory is made inside the parent's one
// (named by an environment variable the child inherits), which the parent
// removes whole.
class TempDir {
 public:
  TempDir() {
    const char* parent = std::getenv(kEnv);
    std::string tmpl = std::string(parent != nullptr ? parent : "/tmp") + "/vmsnap-memtest-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
    if (parent == nullptr) {
      ::setenv(kEnv, path_.c_str(), 1);
      owns_env_ = true;
    }
  }
  ~TempDir() {
    (void)std::system(("rm -rf '" + path_ + "'").c_str());
    if (owns_env_) ::unsetenv(kEnv);
  }
  std::string operator/(const std::string& n) const { return path_ + "/" + n; }

 private:
  static constexpr const char* kEnv = "VMSNAP_MEMTEST_PARENT_DIR";
  std::string path_;
  bool owns_env_ = false;
};

// Page kinds in runs, as guest memory tends to look: zero, text-like, random.
void FillMixed(std::mt19937_64& rng, uint8_t* p, uint64_t pages) {
  static const char kWords[] = "the quick brown fox jumps over the lazy dog kvm snapshot page ";
  uint64_t i = 0;
  while (i < pages) {
    const uint64_t run = std::min<uint64_t>(pages - i, 1 + rng() % 24);
    const int kind = int(rng() % 3);
    for (uint64_t k = 0; k < run; ++k, ++i) {
      uint8_t* pg = p + i * kPage;
      if (kind == 0) {
        std::memset(pg, 0, kPage);
      } else if (kind == 1) {
        const uint64_t off = rng() % (sizeof(kWords) - 1);
        for (uint64_t b = 0; b < kPage; ++b) pg[b] = uint8_t(kWords[(off + b) % (sizeof(kWords) - 1)]);
        std::snprintf(reinterpret_cast<char*>(pg), 32, "page %llu", (unsigned long long)i);
      } else {
        for (uint64_t b = 0; b < kPage; b += 8) {
          const uint64_t v = rng();
          std::memcpy(pg + b, &v, 8);
        }
      }
    }
  }
}

struct Region {
  uint64_t gpa;
  Bytes data;
};

// Three regions; sizes that the 64-page chunks do not divide.
std::vector<Region> MakeRegions(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Region> regs;
  const std::pair<uint64_t, uint64_t> shape[] = {{0x0, 160}, {0x200000, 700}, {0x40000000, 1000}};
  for (auto [gpa, pages] : shape) {
    Region r{gpa, Bytes(pages * kPage)};
    FillMixed(rng, r.data.data(), pages);
    regs.push_back(std::move(r));
  }
  return regs;
}

Status Write(const std::string& path, const std::vector<Region>& regs, schema::Compression comp,
             const std::vector<Bytes>* defined = nullptr, const SnapshotReader* parent = nullptr,
             const std::string& parent_name = "",
             const std::function<void(schema::Manifest::Builder)>& more = {}) {
  WriterOptions o;
  o.chunk_pages = 64;
  o.compression = comp;
  VMSNAP_ASSIGN_OR_RETURN(auto w, SnapshotWriter::Create(path, o));
  if (more) more(w->manifest());
  auto l = w->manifest().getMemory().initRegions(unsigned(regs.size()));
  for (unsigned i = 0; i < regs.size(); ++i) {
    l[i].setSlot(i);
    l[i].setGuestPhysAddr(regs[i].gpa);
    l[i].setSize(regs[i].data.size());
  }
  if (parent) {
    auto pr = w->manifest().initParent();
    auto id = parent->id();
    pr.setSnapshotId(kj::arrayPtr(id.data(), id.size()));
    pr.setPath(parent_name.c_str());
    pr.setDepth(1);
  }
  for (size_t i = 0; i < regs.size(); ++i) {
    const auto& r = regs[i];
    if (defined) {
      VMSNAP_RETURN_IF_ERROR(w->AddPages(r.gpa, r.data.data(), r.data.size(), (*defined)[i].data()));
    } else {
      VMSNAP_RETURN_IF_ERROR(w->AddMemory(r.gpa, r.data.data(), r.data.size()));
    }
  }
  return w->Commit();
}

// Private anonymous memory laid out like the regions, as the VMM maps it.
class GuestMemory {
 public:
  explicit GuestMemory(const std::vector<Region>& regs) {
    for (const auto& r : regs) {
      auto map = Mapping::Anonymous(r.data.size(), "test guest memory");
      if (!map.ok()) std::abort();
      GuestRegion g;
      g.host = map->data();
      g.gpa = r.gpa;
      g.size = r.data.size();
      views_.push_back(g);
      maps_.push_back(std::move(map).value());
    }
  }
  std::span<const GuestRegion> regions() const { return views_; }
  // The same regions as the VMM's loaders take them.
  std::vector<kvm::GuestRegion> kvm_regions() const {
    std::vector<kvm::GuestRegion> out;
    for (const GuestRegion& r : views_) {
      kvm::GuestRegion v;
      v.host = r.host;
      v.gpa = r.gpa;
      v.size = r.size;
      out.push_back(v);
    }
    return out;
  }
  uint8_t* host(size_t i) const { return views_[i].host; }

 private:
  std::vector<Mapping> maps_;
  std::vector<GuestRegion> views_;
};

bool UffdUsable() { return CheckUserfaultfd().ok(); }

// Whether the page at `page` is in memory (mincore): filled, or mapped to the
// zero page, without touching it.
bool Resident(const uint8_t* page) {
  unsigned char v = 0;
  return ::mincore(const_cast<uint8_t*>(page), kPage, &v) == 0 && (v & 1) != 0;
}

// Reads every page of `mem` from `threads` threads in a shuffled order (each
// read is a fault under lazy loading) and counts pages that differ from `want`.
size_t TouchAndCompare(const GuestMemory& mem, const std::vector<Region>& want, unsigned threads) {
  std::vector<std::pair<size_t, uint64_t>> pages;
  for (size_t r = 0; r < want.size(); ++r) {
    for (uint64_t p = 0; p < want[r].data.size() / kPage; ++p) pages.emplace_back(r, p);
  }
  std::shuffle(pages.begin(), pages.end(), std::mt19937_64(7));
  std::atomic<size_t> bad{0}, next{0};
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      for (;;) {
        const size_t k = next.fetch_add(1);
        if (k >= pages.size()) return;
        auto [r, p] = pages[k];
        if (std::memcmp(mem.host(r) + p * kPage, want[r].data.data() + p * kPage, kPage) != 0) {
          bad.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  return bad.load();
}

size_t CountDifferentPages(const GuestMemory& mem, const std::vector<Region>& want) {
  size_t bad = 0;
  for (size_t r = 0; r < want.size(); ++r) {
    for (uint64_t p = 0; p < want[r].data.size() / kPage; ++p) {
      if (std::memcmp(mem.host(r) + p * kPage, want[r].data.data() + p * kPage, kPage) != 0) ++bad;
    }
  }
  return bad;
}

// The end of a scenario run in a child process: a read of `addr` must never
// return, whether its fault is what makes the pager fail or the pager failed
// before. Once the pager has reported an error (`called`), the read must
// still be blocked; then the pager goes away and the read must end the
// process with a signal (DiedOfAFault) rather than see zeros.
[[noreturn]] void ReadNeverReturns(const uint8_t* addr, const std::atomic<bool>& called,
                                   std::unique_ptr<LazyPager>& pager) {
  std::atomic<bool> returned{false};
  std::thread reader([&] {
    volatile uint8_t v = *addr;
    (void)v;
    returned = true;
    std::fprintf(stderr, "WRONG: the read got a page\n");
    std::_Exit(11);
  });
  for (int i = 0; i < 500 && !called; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!called) std::_Exit(12);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  if (returned) std::_Exit(13);
  std::fprintf(stderr, "the read is still blocked\n");
  pager.reset();  // poisons the failed block: the blocked read now gets a signal
  reader.join();
  std::_Exit(14);
}

bool DiedOfAFault(int st) { return WIFSIGNALED(st) && (WTERMSIG(st) == SIGBUS || WTERMSIG(st) == SIGSEGV); }

// One region of `pages` mixed pages at gpa 0 in 256-page zstd chunks (each
// several zstd blocks, so it can be decoded in part), one compression
// thread; `before_compress` as the writer's test hook; `dense`: no zero page.
Status WriteBig(const std::string& path, std::vector<Region>& want, uint64_t pages,
                std::function<void(int)> before_compress = {}, bool dense = false) {
  std::mt19937_64 rng(5);
  want = {{0x0, Bytes(pages * kPage)}};
  FillMixed(rng, want[0].data.data(), pages);
  for (uint64_t p = 0; dense && p < pages; ++p) want[0].data[p * kPage + 100] |= 1;
  WriterOptions o;
  o.chunk_pages = 256;
  o.compression = schema::Compression::ZSTD;
  o.threads = 1;
  o.before_compress = std::move(before_compress);
  VMSNAP_ASSIGN_OR_RETURN(auto w, SnapshotWriter::Create(path, o));
  auto l = w->manifest().getMemory().initRegions(1);
  l[0].setSlot(0);
  l[0].setGuestPhysAddr(0);
  l[0].setSize(want[0].data.size());
  VMSNAP_RETURN_IF_ERROR(w->AddMemory(0, want[0].data.data(), want[0].data.size()));
  return w->Commit();
}

class Loader : public ::testing::Test {
 protected:
  void SetUp() override {
    regs_ = MakeRegions(1);
    ASSERT_TRUE(Write(dir_ / "z.vmsnap", regs_, schema::Compression::ZSTD).ok());
    ASSERT_TRUE(Write(dir_ / "raw.vmsnap", regs_, schema::Compression::NONE).ok());
    // A 3-layer chain: layer 1 zeroes and rewrites a stretch (zero pages over
    // pages its parent stored), layer 2 rewrites every 7th page everywhere.
    std::mt19937_64 rng(2);
    chain_state_ = regs_;
    ASSERT_TRUE(Write(dir_ / "c0.vmsnap", chain_state_, schema::Compression::ZSTD).ok());
    for (int layer = 1; layer <= 2; ++layer) {
      std::vector<Bytes> defined;
      for (auto& r : chain_state_) {
        const uint64_t pages = r.data.size() / kPage;
        Bytes def((pages + 7) / 8, 0);
        for (uint64_t p = 0; p < pages; ++p) {
          const bool dirty = layer == 1 ? (p >= 20 && p < 150) : (p % 7 == 3);
          if (!dirty) continue;
          def[p / 8] |= uint8_t(1 << (p % 8));
          uint8_t* pg = r.data.data() + p * kPage;
          if (layer == 1 && p % 3 == 0) std::memset(pg, 0, kPage);
          else FillMixed(rng, pg, 1);
        }
        defined.push_back(std::move(def));
      }
      const std::string prev = "c" + std::to_string(layer - 1) + ".vmsnap";
      auto parent = SnapshotReader::Open(dir_ / prev);
      ASSERT_TRUE(parent.ok());
      ASSERT_TRUE(Write(dir_ / ("c" + std::to_string(layer) + ".vmsnap"), chain_state_,
                        schema::Compression::ZSTD, &defined, parent.value().get(), prev)
                      .ok());
    }
  }

  SnapshotChain Open(const std::string& name) {
    auto c = SnapshotChain::Open(dir_ / name);
    EXPECT_TRUE(c.ok()) << c.status().message();
    return std::move(c).value();
  }

  // Flips one byte inside the stored bytes of chunk `index` of `name`.
  void CorruptChunk(const std::string& name, size_t index) {
    uint64_t off;
    {
      auto r = SnapshotReader::Open(dir_ / name);
      ASSERT_TRUE(r.ok());
      ASSERT_GT(r.value()->chunk_index()[index].stored_length, 100u);
      off = r.value()->chunk_index()[index].file_offset + 77;
    }
    FILE* f = std::fopen((dir_ / name).c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, long(off), SEEK_SET);
    const int c = std::fgetc(f);
    std::fseek(f, long(off), SEEK_SET);
    std::fputc(c ^ 0x5a, f);
    std::fclose(f);
  }

  TempDir dir_;
  std::vector<Region> regs_, chain_state_;
};

TEST_F(Loader, EagerRestoresEveryPageCompressedRawAndChain) {
  for (const char* name : {"z.vmsnap", "raw.vmsnap", "c2.vmsnap"}) {
    const auto& want = std::string(name) == "c2.vmsnap" ? chain_state_ : regs_;
    for (unsigned threads : {1u, 3u}) {
      SnapshotChain chain = Open(name);
      GuestMemory mem(want);
      EagerOptions o;
      o.threads = threads;
      Status s = LoadEager(chain, mem.regions(), o);
      ASSERT_TRUE(s.ok()) << s.message();
      EXPECT_EQ(CountDifferentPages(mem, want), 0u) << name << " threads " << threads;
    }
  }
}

TEST_F(Loader, EagerOverwritesMemoryThatWasNotZero) {
  SnapshotChain chain = Open("c2.vmsnap");
  GuestMemory mem(chain_state_);
  for (size_t r = 0; r < chain_state_.size(); ++r) {
    std::memset(mem.host(r), 0xcc, chain_state_[r].data.size());
  }
  EagerOptions o;
  o.destination_zeroed = false;
  ASSERT_TRUE(LoadEager(chain, mem.regions(), o).ok());
  EXPECT_EQ(CountDifferentPages(mem, chain_state_), 0u);
}

TEST_F(Loader, EagerReportsProgressUpToTheTotal) {
  SnapshotChain chain = Open("z.vmsnap");
  GuestMemory mem(regs_);
  uint64_t last_done = 0, last_total = 0;
  EagerOptions o;
  o.progress = [&](uint64_t d, uint64_t t) {
    EXPECT_GE(d, last_done);
    last_done = d;
    last_total = t;
  };
  ASSERT_TRUE(LoadEager(chain, mem.regions(), o).ok());
  EXPECT_EQ(last_total, (160u + 700u + 1000u) * kPage);
  EXPECT_EQ(last_done, last_total);
}

TEST_F(Loader, EagerNamesTheCorruptChunk) {
  CorruptChunk("z.vmsnap", 5);
  SnapshotChain chain = Open("z.vmsnap");
  GuestMemory mem(regs_);
  Status s = LoadEager(chain, mem.regions());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("chunk 5 "), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("checksum mismatch"), std::string::npos) << s.message();
}

TEST_F(Loader, LazyEveryTouchedPageIsTheSavedPage) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable: " << CheckUserfaultfd().message();
  for (const char* name : {"z.vmsnap", "raw.vmsnap", "c2.vmsnap"}) {
    const auto& want = std::string(name) == "c2.vmsnap" ? chain_state_ : regs_;
    SnapshotChain chain = Open(name);
    GuestMemory mem(want);
    LazyOptions o;
    o.background_threads = 1;
    auto pager = LazyPager::Start(chain, mem.regions(), o);
    ASSERT_TRUE(pager.ok()) << pager.status().message();
    // Touching starts at once, racing the background thread.
    EXPECT_EQ(TouchAndCompare(mem, want, 4), 0u) << name;
    Status s = pager.value()->Wait();
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_TRUE(pager.value()->done());
    const LazyStats st = pager.value()->stats();
    EXPECT_EQ(st.fault_fills + st.background_fills, 3u + 11u + 16u) << name;  // every block once
    // After the pager finished, memory is ordinary memory with the same content.
    pager.value().reset();
    EXPECT_EQ(CountDifferentPages(mem, want), 0u) << name;
  }
}

TEST_F(Loader, LazyFaultFillsOnlyItsBlockWithoutBackground) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  SnapshotChain chain = Open("z.vmsnap");
  GuestMemory mem(regs_);
  LazyOptions o;
  o.background = false;
  auto pager = LazyPager::Start(chain, mem.regions(), o);
  ASSERT_TRUE(pager.ok()) << pager.status().message();
  // The last page of the highest region.
  const uint64_t p = 999;
  EXPECT_EQ(std::memcmp(mem.host(2) + p * kPage, regs_[2].data.data() + p * kPage, kPage), 0);
  LazyStats st = pager.value()->stats();
  EXPECT_GE(st.faults, 1u);
  EXPECT_LE(st.fault_fills, 1u);
  EXPECT_GE(st.fault_fills + st.partial_faults, 1u) << "the fault was served by neither a fill nor a partial decode";
  EXPECT_EQ(st.background_fills, 0u);
  EXPECT_LE(st.bytes_filled, 64 * kPage);  // that block's pages at most
  EXPECT_FALSE(pager.value()->done());
  // Touching everything completes the load through faults alone.
  EXPECT_EQ(TouchAndCompare(mem, regs_, 3), 0u);
  ASSERT_TRUE(pager.value()->Wait().ok());
  st = pager.value()->stats();
  EXPECT_EQ(st.fault_fills, 30u);
  EXPECT_EQ(st.background_fills, 0u);
}

// A first fault decodes its chunk only as far as the faulting page, and the
// pages after it and the next faults on the block are served from that
// partly decoded chunk (in a buffer that held another chunk before). Pages
// are touched a block at a time in a shuffled order, each compared at once,
// with 256-page chunks of several zstd blocks each, so that a page served
// from a part of the chunk not decoded yet, or from the wrong stored page,
// is read back.
TEST_F(Loader, LazyFirstPagesComeInBeforeAnyFault) {
  // What a VMM touches itself before its guest runs (the generation ID's
  // page) is filled without waiting for the fault.
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  SnapshotChain chain = Open("z.vmsnap");
  GuestMemory mem(regs_);
  // A page of region 2 that is not zero (a zero page would come in as the
  // zero page on its fault, nothing to fill ahead).
  uint64_t p = 0;
  while (std::all_of(regs_[2].data.begin() + long(p * kPage), regs_[2].data.begin() + long((p + 1) * kPage),
                     [](uint8_t b) { return b == 0; })) {
    ++p;
  }
  LazyOptions o;
  o.background = false;
  // Any address within the page names it; one outside guest memory is
  // ignored.
  o.first_pages = {regs_[2].gpa + p * kPage + 123, uint64_t(1) << 50};
  auto pager = LazyPager::Start(chain, mem.regions(), o);
  ASSERT_TRUE(pager.ok()) << pager.status().message();
  uint8_t* const page = mem.host(2) + p * kPage;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  // (The pager counts the page just after it has put it in place.)
  auto filled = [&] { return Resident(page) && pager.value()->stats().first_pages >= 1; };
  while (!filled() && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(Resident(page)) << "the first page never came in";
  EXPECT_EQ(std::memcmp(page, regs_[2].data.data() + p * kPage, kPage), 0);
  const LazyStats st = pager.value()->stats();
  EXPECT_EQ(st.first_pages, 1u);
  EXPECT_EQ(st.faults, 0u) << "reading the page filled ahead faulted";
  EXPECT_EQ(st.background_fills, 0u);
}

// A snapshot of an x86-64 guest in long mode whose vCPU resumes at gva
// 0x10ff0 with RSP 0x21000: 4-level tables in region 0's pages 1-4 (block
// 0), the code page mapped to region 1's page 5 and the stack page (the
// one below RSP) to region 2's page 100, each in a block of its own.
class StartPagesSnapshot {
 public:
  static constexpr uint64_t kCodeGpa = 0x200000 + 5 * kPage, kStackGpa = 0x40000000 + 100 * kPage;
  explicit StartPagesSnapshot(std::vector<Region> regs) : regs_(std::move(regs)) {
    auto put = [&](uint64_t gpa, uint64_t v) { std::memcpy(regs_[0].data.data() + gpa, &v, 8); };
    std::memset(regs_[0].data.data() + kPage, 0, 4 * kPage);
    put(0x1000, 0x2000 | 3);
    put(0x2000, 0x3000 | 3);
    put(0x3000, 0x4000 | 3);
    put(0x4000 + 0x10 * 8, kCodeGpa | 1);
    put(0x4000 + 0x20 * 8, kStackGpa | 3);
    std::memset(regs_[1].data.data() + 5 * kPage, 0xc3, kPage);
    std::memset(regs_[2].data.data() + 100 * kPage, 0x5a, kPage);
  }
  Status Write(const std::string& path) const {
    return memory::Write(path, regs_, schema::Compression::ZSTD, nullptr, nullptr, "", [](schema::Manifest::Builder m) {
      m.setArch(schema::Arch::X8664);
      auto x = m.initVcpus(1)[0].initX8664();
      x.initRegs().setRip(0x10ff0);
      x.getRegs().setRsp(0x21000);
      auto s = x.initSregs();
      s.setCr0((1ull << 31) | 1);
      s.setCr3(0x1000);
      s.setCr4(1ull << 5);
      s.setEfer((1ull << 10) | (1ull << 8));
    });
  }
  const std::vector<Region>& regions() const { return regs_; }

 private:
  std::vector<Region> regs_;
};

TEST_F(Loader, LazyStartPagesComeInBeforeAnyFault) {
  // The guest's first instruction's page, its stack's and the tables that
  // map them are filled ahead; a page the guest reads later is not.
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  StartPagesSnapshot snap(regs_);
  ASSERT_TRUE(snap.Write(dir_ / "start.vmsnap").ok());
  SnapshotChain chain = Open("start.vmsnap");
  GuestMemory mem(snap.regions());
  LazyOptions o;
  o.background = false;
  o.start_pages = true;
  auto pager = LazyPager::Start(chain, mem.regions(), o);
  ASSERT_TRUE(pager.ok()) << pager.status().message();
  const uint8_t* code = mem.host(1) + 5 * kPage;
  const uint8_t* stack = mem.host(2) + 100 * kPage;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (pager.value()->stats().start_pages < 6 && std::chrono::steady_clock::now() < end) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  for (uint64_t table = 1; table <= 4; ++table) {
    EXPECT_TRUE(Resident(mem.host(0) + table * kPage)) << "page table at gpa " << table * kPage;
  }
  ASSERT_TRUE(Resident(code)) << "the code page never came in";
  ASSERT_TRUE(Resident(stack)) << "the stack page never came in";
  EXPECT_FALSE(Resident(mem.host(2) + 900 * kPage)) << "a page off the walk came in";
  EXPECT_EQ(std::memcmp(code, snap.regions()[1].data.data() + 5 * kPage, kPage), 0);
  EXPECT_EQ(std::memcmp(stack, snap.regions()[2].data.data() + 100 * kPage, kPage), 0);
  const LazyStats st = pager.value()->stats();
  EXPECT_EQ(st.start_pages, 6u);  // four tables, code, stack
  EXPECT_EQ(st.faults, 0u) << "reading the pages filled ahead faulted";
}

TEST_F(Loader, LazyStartPagesOverACorruptTableReportItAndLeaveTheHandlerServing) {
  // The walk reads the tables through pages the pager serves itself: a
  // table in a chunk that fails its checksum must end the walk with the
  // chunk named, not leave the fault handler waiting on its own fault.
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  StartPagesSnapshot snap(regs_);
  ASSERT_TRUE(snap.Write(dir_ / "start.vmsnap").ok());
  CorruptChunk("start.vmsnap", 0);  // region 0's first chunk: the tables
  auto scenario = [&] {
    ::alarm(20);  // a handler stuck on its own fault would hang here
    SnapshotChain chain = Open("start.vmsnap");
    GuestMemory mem(snap.regions());
    std::atomic<bool> called{false};
    LazyOptions o;
    o.background = false;
    o.start_pages = true;
    o.on_error = [&](const Status& s) {
      std::fprintf(stderr, "stopped: %s\n", s.message().c_str());
      called = true;
    };
    auto pager = LazyPager::Start(chain, mem.regions(), o);
    if (!pager.ok()) std::_Exit(10);
    // A fault on a good block after the failed walk is served.
    const uint64_t p = 300;
    if (std::memcmp(mem.host(1) + p * kPage, snap.regions()[1].data.data() + p * kPage, kPage) != 0) std::_Exit(11);
    if (!called) std::_Exit(12);
    std::fprintf(stderr, "served after the failed walk\n");
    std::_Exit(0);
  };
  EXPECT_EXIT(scenario(), ::testing::ExitedWithCode(0),
              "stopped: .*chunk 0 .*checksum mismatch(.|\n)*served after the failed walk");
}

TEST_F(Loader, LazyHeldFillFillsOnlyWhatIsTouchedUntilReleased) {
  // A VM restored ahead of its start holds only the pages it touched.
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  SnapshotChain chain = Open("z.vmsnap");
  GuestMemory mem(regs_);
  LazyOptions o;
  o.background_threads = 1;
  o.hold_fill = true;
  auto pager = LazyPager::Start(chain, mem.regions(), o);
  ASSERT_TRUE(pager.ok()) << pager.status().message();
  // A touch is served while the fill is held.
  EXPECT_EQ(std::memcmp(mem.host(0), regs_[0].data.data(), kPage), 0);
  // Well past the first faults' window, the background has filled nothing.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  LazyStats st = pager.value()->stats();
  EXPECT_EQ(st.background_fills, 0u);
  EXPECT_FALSE(pager.value()->done());
  EXPECT_LE(st.bytes_filled, 64 * kPage) << "more than the touched block came in";
  // Released, it fills the rest, and memory is the snapshot's.
  pager.value()->Release();
  Status s = pager.value()->Wait();
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(pager.value()->done());
  EXPECT_GT(pager.value()->stats().background_fills, 0u);
  pager.value().reset();
  EXPECT_EQ(CountDifferentPages(mem, regs_), 0u);
}

TEST_F(Loader, LazyPagesServedFromAPartlyDecodedChunkAreTheSavedPages) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  std::mt19937_64 rng(5);
  std::vector<Region> want;
  ASSERT_TRUE(WriteBig(dir_ / "big.vmsnap", want, 1024).ok());
  SnapshotChain chain = Open("big.vmsnap");
  for (const ChunkInfo& c : chain.leaf().chunk_index()) {
    ASSERT_TRUE(c.compressed);
    ASSERT_GT(c.raw_length, 128u * 1024) << "a chunk of one zstd block cannot be decoded in part";
  }
  GuestMemory mem(want);
  LazyOptions o;
  o.background = false;  // every page comes through a fault
  auto pager = LazyPager::Start(chain, mem.regions(), o);
  ASSERT_TRUE(pager.ok()) << pager.status().message();
  size_t bad = 0;
  for (uint64_t block = 0; block < 4; ++block) {
    std::vector<uint64_t> order(256);
    for (uint64_t k = 0; k < 256; ++k) order[k] = block * 256 + k;
    // The middle first, then everywhere: the first fault leaves most of the
    // chunk undecoded.
    std::shuffle(order.begin(), order.end(), rng);
    std::swap(order[0], *std::find(order.begin(), order.end(), block * 256 + 130));
    const uint64_t partial_before = pager.value()->stats().partial_faults;
    for (size_t k = 0; k < order.size(); ++k) {
      const uint64_t p = order[k];
      if (std::memcmp(mem.host(0) + p * kPage, want[0].data.data() + p * kPage, kPage) != 0) {
        ADD_FAILURE() << "page " << p << " differs";
        if (++bad > 5) return;
      }
      if (k == 0) {
        // One page in, and the block is not: the chunk was decoded in part.
        const LazyStats st = pager.value()->stats();
        EXPECT_EQ(st.fault_fills, block);
        EXPECT_EQ(st.partial_faults, partial_before + 1);
      }
    }
  }
  ASSERT_TRUE(pager.value()->Wait().ok());
  const LazyStats st = pager.value()->stats();
  EXPECT_EQ(st.fault_fills, 4u);
  EXPECT_EQ(st.background_fills, 0u);
}

// Decoding a chunk from the front gives, page by page, the pages a whole
// decode of it gives. Each page is compared as soon as Ready says it is
// there, in a buffer that held another chunk before (so a page reported
// ready too early holds that chunk's page, not the right one).
TEST_F(Loader, AChunkDecodedFromTheFrontGivesTheWholeDecodesPagesOneByOne) {
  std::vector<Region> want;
  ASSERT_TRUE(WriteBig(dir_ / "big.vmsnap", want, 1024).ok());
  SnapshotChain chain = Open("big.vmsnap");
  const SnapshotReader& r = chain.leaf();
  internal::ChunkStream stream(256 * kPage);
  Bytes whole(256 * kPage);
  for (uint32_t ci : {3u, 0u, 2u, 1u}) {
    const ChunkInfo& c = r.chunk_index()[ci];
    ASSERT_TRUE(c.compressed);
    auto stored = r.StoredBytes(ci);
    ASSERT_TRUE(stored.ok());
    ASSERT_EQ(ZSTD_decompress(whole.data(), whole.size(), stored->data(), stored->size()), c.raw_length);
    ASSERT_TRUE(stream.Begin(chain, {}, 0, ci).ok());
    const uint32_t n = stream.stored_pages();
    ASSERT_EQ(uint64_t(n) * kPage, c.raw_length);
    EXPECT_EQ(stream.ready_pages(), 0u);
    for (uint32_t k = 0; k < n; ++k) {
      ASSERT_TRUE(stream.Ready(k + 1).ok());
      ASSERT_GE(stream.ready_pages(), k + 1);
      if (k == 0) {
        EXPECT_LT(stream.ready_pages(), n / 2) << "the first page decoded half the chunk";
      }
      ASSERT_EQ(std::memcmp(stream.data() + uint64_t(k) * kPage, whole.data() + uint64_t(k) * kPage, kPage), 0)
          << "chunk " << ci << ", stored page " << k << " of " << n;
    }
    Status s = stream.Finish();
    ASSERT_TRUE(s.ok()) << s.message();
  }
}

// A store's cache holds a chunk's bytes only once the fetch hook has been
// asked for them: the first fault on a block, served by decoding its chunk
// in part, asks the hook before it reads a byte. Here the chunks' bytes are
// zeros until the hook writes them in; a read before the hook fails the
// chunk's checksum and the fault is never answered.
TEST_F(Loader, APartlyDecodedChunkIsFetchedBeforeItIsRead) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  std::vector<Region> want;
  ASSERT_TRUE(WriteBig(dir_ / "big.vmsnap", want, 1024).ok());
  Bytes full;
  {
    FILE* f = std::fopen((dir_ / "big.vmsnap").c_str(), "rb");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 0, SEEK_END);
    full.resize(size_t(std::ftell(f)));
    std::fseek(f, 0, SEEK_SET);
    ASSERT_EQ(std::fread(full.data(), 1, full.size(), f), full.size());
    std::fclose(f);
  }
  Bytes holes = full;
  std::vector<ChunkInfo> chunks;
  {
    SnapshotChain chain = Open("big.vmsnap");
    chunks = chain.leaf().chunk_index();
  }
  for (const ChunkInfo& c : chunks) std::memset(holes.data() + c.file_offset, 0, c.stored_length);
  {
    FILE* f = std::fopen((dir_ / "holes.vmsnap").c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(holes.data(), 1, holes.size(), f), holes.size());
    std::fclose(f);
  }
  uint64_t page = 300;  // in chunk 1: the first stored page from there on
  while (std::all_of(want[0].data.begin() + long(page * kPage), want[0].data.begin() + long((page + 1) * kPage),
                     [](uint8_t b) { return b == 0; })) {
    ++page;
  }
  ASSERT_LT(page, 512u);
  auto scenario = [&] {
    ::alarm(60);
    SnapshotChain chain = Open("holes.vmsnap");
    const int fd = ::open((dir_ / "holes.vmsnap").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) std::_Exit(2);
    GuestMemory mem(want);
    std::mutex mu;
    std::vector<size_t> asked;
    LazyOptions o;
    o.background = false;  // only the fault reads
    o.fetch_chunk = [&](size_t, size_t chunk) {
      std::lock_guard<std::mutex> lock(mu);
      asked.push_back(chunk);
      const ChunkInfo& c = chunks[chunk];
      if (::pwrite(fd, full.data() + c.file_offset, c.stored_length, off_t(c.file_offset)) != ssize_t(c.stored_length)) {
        return Status::Io("pwrite");
      }
      return Status::Ok();
    };
    o.on_error = [](const Status& s) {
      std::fprintf(stderr, "failed: %s\n", s.message().c_str());
      std::_Exit(3);
    };
    auto pager = LazyPager::Start(chain, mem.regions(), o);
    if (!pager.ok()) std::_Exit(4);
    if (std::memcmp(mem.host(0) + page * kPage, want[0].data.data() + page * kPage, kPage) != 0) {
      std::fprintf(stderr, "page %llu differs\n", (unsigned long long)page);
      std::_Exit(5);
    }
    const LazyStats st = pager.value()->stats();
    std::lock_guard<std::mutex> lock(mu);
    if (st.partial_faults != 1 || st.fault_fills != 0 || asked != std::vector<size_t>{1}) {
      std::fprintf(stderr, "partial %llu, filled %llu, %zu chunks asked\n", (unsigned long long)st.partial_faults,
                   (unsigned long long)st.fault_fills, asked.size());
      std::_Exit(6);
    }
    std::_Exit(0);
  };
  EXPECT_EXIT(scenario(), ::testing::ExitedWithCode(0), "");
}

// Pages served from a chunk decoded in part were decoded from bytes that
// passed their stored checksum; the checksum of the decoded pages can only be
// checked once the rest is decoded. A chunk whose pages were changed after
// the writer checksummed them and before it compressed them (its stored bytes
// and their checksum agree) must fail at that check: its block fails, the
// error names the chunk, and a later page of it is never served.
TEST_F(Loader, APartlyDecodedChunkThatFailsItsRawChecksumServesNoMorePages) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  std::vector<Region> want;
  int compressed = 0;
  uint64_t changed = 0;
  ASSERT_TRUE(WriteBig(dir_ / "bad.vmsnap", want, 512, [&](int) {
                if (compressed++ != 0) return;
                // Chunk 0's last page; a chunk with no zero page is
                // compressed from the caller's memory, so the change is what
                // zstd reads.
                changed = 255;
                want[0].data[changed * kPage + 9] ^= 0x77;
              }, /*dense=*/true).ok());
  ASSERT_EQ(changed, 255u);
  {
    // The file as a whole read shows the damage.
    SnapshotChain chain = Open("bad.vmsnap");
    Bytes raw(256 * kPage);
    Status s = chain.leaf().ReadChunk(0, raw.data());
    ASSERT_NE(s.message().find("raw checksum mismatch"), std::string::npos) << s.message();
  }
  auto scenario = [&] {
    ::alarm(60);
    SnapshotChain chain = Open("bad.vmsnap");
    GuestMemory mem(want);
    std::atomic<bool> called{false};
    LazyOptions o;
    o.background_threads = 1;
    o.on_error = [&](const Status& s) {
      std::fprintf(stderr, "stopped: %s\n", s.message().c_str());
      called = true;
    };
    // The first fault waits before the snapshot is given, so that the
    // handler takes it before the background starts.
    auto pager = LazyPager::Arm(mem.regions());
    if (!pager.ok()) std::_Exit(10);
    std::atomic<bool> first{false};
    std::thread vcpu([&] {
      volatile uint8_t v = mem.host(0)[10 * kPage + 5];
      (void)v;
      first = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!pager.value()->Begin(chain, mem.regions(), o).ok()) std::_Exit(11);
    vcpu.join();
    if (std::memcmp(mem.host(0) + 10 * kPage, want[0].data.data() + 10 * kPage, kPage) != 0) std::_Exit(12);
    if (pager.value()->stats().partial_faults != 1) std::_Exit(13);
    // The background finishes the chunk and finds it bad: only then is
    // the changed page asked for (before, a fault would decode it and be
    // served it, as it is served the pages before it).
    for (int i = 0; i < 500 && !called; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ReadNeverReturns(mem.host(0) + changed * kPage + 9, called, pager.value());
  };
  EXPECT_EXIT(scenario(), DiedOfAFault,
              "stopped: .*chunk 0 .*raw checksum mismatch after decompression(.|\n)*the read is still blocked");
}

// A VM armed while it waits pages through the pager it armed: the load gives
// that pager the snapshot and starts no thread of its own (a fresh pager
// would start two).
TEST_F(Loader, VmmLazyLoaderPagesThroughThePagerArmedBeforeIt) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  auto tasks = [] {
    std::set<std::string> t;
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir("/proc/self/task"), ::closedir);
    if (!d) return t;
    while (dirent* e = ::readdir(d.get())) {
      if (e->d_name[0] != '.') t.insert(e->d_name);
    }
    return t;
  };
  GuestMemory mem(chain_state_);
  std::vector<kvm::GuestRegion> views = mem.kvm_regions();
  auto armed = LazyPager::Arm(mem.regions());
  ASSERT_TRUE(armed.ok()) << armed.status().message();
  const LazyPager* const armed_pager = armed.value().get();
  const std::set<std::string> after_arm = tasks();
  LazyOptions o;
  o.background_threads = 1;
  LazyLoader loader(o);
  loader.set_armed(std::move(armed).value());
  SnapshotChain chain = Open("c2.vmsnap");
  ASSERT_TRUE(loader.Load(chain, views).ok());
  EXPECT_EQ(loader.pager(), armed_pager);
  for (const std::string& t : tasks()) EXPECT_TRUE(after_arm.count(t)) << "the load started thread " << t;
  EXPECT_EQ(TouchAndCompare(mem, chain_state_, 2), 0u);
  ASSERT_TRUE(loader.pager()->Wait().ok());
}

TEST_F(Loader, EagerAndLazyGiveIdenticalMemory) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  SnapshotChain chain = Open("c2.vmsnap");
  GuestMemory a(chain_state_), b(chain_state_);
  ASSERT_TRUE(LoadEager(chain, a.regions()).ok());
  auto pager = LazyPager::Start(chain, b.regions());
  ASSERT_TRUE(pager.ok());
  ASSERT_TRUE(pager.value()->Wait().ok());
  for (size_t r = 0; r < chain_state_.size(); ++r) {
    EXPECT_EQ(std::memcmp(a.host(r), b.host(r), chain_state_[r].data.size()), 0) << "region " << r;
  }
}

TEST_F(Loader, LazyCorruptChunkFoundInTheBackgroundIsReported) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  CorruptChunk("z.vmsnap", 7);
  SnapshotChain chain = Open("z.vmsnap");
  GuestMemory mem(regs_);
  std::atomic<int> calls{0};
  std::string reported;
  LazyOptions o;
  o.on_error = [&](const Status& s) {
    reported = s.message();
    calls.fetch_add(1);
  };
  auto pager = LazyPager::Start(chain, mem.regions(), o);
  ASSERT_TRUE(pager.ok());
  Status s = pager.value()->Wait();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("chunk 7 "), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("checksum mismatch"), std::string::npos) << s.message();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(reported, s.message());
  EXPECT_FALSE(pager.value()->done());
}

// A file filled on demand (a store's cache): the pager asks the fetch hook
// for every stored chunk before it reads it, and a chunk the hook cannot
// deliver fails like a chunk that fails its checksum.
TEST_F(Loader, LazyAsksTheFetchHookForEveryChunkAndStopsOnItsError) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  SnapshotChain chain = Open("z.vmsnap");
  std::set<size_t> stored;
  for (size_t i = 0; i < chain.leaf().chunk_index().size(); ++i) {
    if (chain.leaf().chunk_index()[i].stored_length > 0) stored.insert(i);
  }
  std::mutex mu;
  std::set<size_t> asked;
  {
    GuestMemory mem(regs_);
    LazyOptions o;
    o.fetch_chunk = [&](size_t layer, size_t chunk) {
      std::lock_guard<std::mutex> lock(mu);
      EXPECT_EQ(layer, 0u);
      asked.insert(chunk);
      return Status::Ok();
    };
    auto pager = LazyPager::Start(chain, mem.regions(), o);
    ASSERT_TRUE(pager.ok());
    ASSERT_TRUE(pager.value()->Wait().ok());
    pager.value().reset();
    EXPECT_EQ(asked, stored);
    EXPECT_EQ(CountDifferentPages(mem, regs_), 0u);
  }
  GuestMemory mem(regs_);
  std::atomic<int> calls{0};
  LazyOptions o;
  o.fetch_chunk = [](size_t, size_t chunk) {
    return chunk == 7 ? Status::Io("store: chunk 7 did not arrive") : Status::Ok();
  };
  o.on_error = [&](const Status&) { calls.fetch_add(1); };
  auto pager = LazyPager::Start(chain, mem.regions(), o);
  ASSERT_TRUE(pager.ok());
  Status s = pager.value()->Wait();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("chunk 7 did not arrive"), std::string::npos) << s.message();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_FALSE(pager.value()->done());
}

// The faulting thread must never get a page of a block that failed its
// checksum: it stays blocked while the error callback stops the VM, and when
// the pager goes away the page faults with a signal instead of reading zeros.
// Run in a child process, since the end of the story is a fatal signal.
TEST_F(Loader, LazyFaultOnCorruptChunkStopsWithTheChunkNamed) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // Chunk 9 is region 1's seventh chunk: pages 384..447, gpa 0x380000-0x3bffff.
  CorruptChunk("z.vmsnap", 9);
  auto scenario = [&] {
    SnapshotChain chain = Open("z.vmsnap");
    GuestMemory mem(regs_);
    std::atomic<bool> called{false};
    LazyOptions o;
    o.on_error = [&](const Status& s) {
      std::fprintf(stderr, "stopped: %s\n", s.message().c_str());
      called = true;
    };
    auto pager = LazyPager::Start(chain, mem.regions(), o);
    if (!pager.ok()) std::_Exit(10);
    ReadNeverReturns(mem.host(1) + 400 * kPage + 5, called, pager.value());
  };
  EXPECT_EXIT(scenario(), DiedOfAFault,
              "stopped: .*chunk 9 \\(gpa 0x380000-0x3bffff\\).*checksum mismatch"
              "(.|\n)*the read is still blocked");
}

TEST_F(Loader, CopyOnWriteMappingOfAnUncompressedSnapshot) {
  SnapshotChain chain = Open("raw.vmsnap");
  GuestMemory mem(regs_);
  // Too many runs: refused before anything is given up for the mapping (an
  // armed pager a loader would disarm stays armed).
  int before = 0;
  EXPECT_EQ(MapCopyOnWrite(chain, mem.regions(), 1, [&] { ++before; }).code(), Code::kUnsupported);
  EXPECT_EQ(before, 0);
  Status s = MapCopyOnWrite(chain, mem.regions(), 16384, [&] { ++before; });
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(before, 1);
  EXPECT_EQ(CountDifferentPages(mem, regs_), 0u);
  // Writes stay private: the snapshot file still verifies.
  std::memset(mem.host(1), 0xab, 64 * kPage);
  auto reader = SnapshotReader::Open(dir_ / "raw.vmsnap");
  ASSERT_TRUE(reader.ok());
  EXPECT_TRUE(reader.value()->VerifyAll().ok());

  SnapshotChain z = Open("z.vmsnap");
  GuestMemory mem2(regs_);
  EXPECT_EQ(MapCopyOnWrite(z, mem2.regions()).code(), Code::kUnsupported);
}

// The VMM's seam: the lazy loader outlives the VMM's own chain object.
TEST_F(Loader, VmmLazyLoaderKeepsItsOwnChainAndServesAfterTheCallersChainIsGone) {
  if (!UffdUsable()) GTEST_SKIP() << "userfaultfd unavailable";
  GuestMemory mem(chain_state_);
  std::vector<kvm::GuestRegion> views = mem.kvm_regions();
  LazyLoader loader;
  {
    SnapshotChain chain = Open("c2.vmsnap");
    ASSERT_TRUE(loader.Load(chain, views).ok());
  }
  EXPECT_EQ(TouchAndCompare(mem, chain_state_, 2), 0u);
  ASSERT_TRUE(loader.pager()->Wait().ok());
  loader.Stop();

  GuestMemory mem2(chain_state_);
  ParallelEagerLoader eager;
  SnapshotChain chain = Open("c2.vmsnap");
  for (size_t i = 0; i < views.size(); ++i) views[i].host = mem2.host(i);
  ASSERT_TRUE(eager.Load(chain, views).ok());
  EXPECT_EQ(CountDifferentPages(mem2, chain_state_), 0u);
}

}  // namespace
}  // namespace vmsnap::memory
