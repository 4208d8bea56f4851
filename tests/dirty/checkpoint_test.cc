// SPDX-License-Identifier: MIT
// Checkpoint cycles (capture/dirty/checkpoint.h) over a tracker double that
// behaves like KVM's bitmap with manual protect, and over real KVM.
#include "capture/dirty/checkpoint.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "tests/dirty/mini_vm.h"

namespace vmsnap::testing {
namespace {

using namespace std::chrono_literals;
using capture::dirty::CheckpointOptions;
using capture::dirty::CheckpointTracker;
using capture::dirty::DirtyTracker;
using capture::dirty::FetchOptions;
using capture::dirty::Mode;
using capture::dirty::PageLayout;
using capture::dirty::PageSet;

constexpr uint64_t kPages = 4096;

kvm::GuestRegion FakeRegion() {
  kvm::GuestRegion r;
  r.slot = 0;
  r.gpa = 0x100000;
  r.size = kPages * 4096;
  r.name = "ram";
  return r;
}

// KVM's bitmap with manual protect, in memory: a write to an armed page sets
// its bit; the bit stays until the page is re-armed.
class FakeKvmTracker final : public DirtyTracker {
 public:
  FakeKvmTracker() : DirtyTracker(MakeLayout()), bits_(kPages) {}
  static PageLayout MakeLayout() {
    kvm::GuestRegion r = FakeRegion();
    return PageLayout({&r, 1}, 4096);
  }
  Mode mode() const override { return Mode::kBitmap; }
  Status Start() override {
    std::lock_guard lock(mu_);
    std::lock_guard klock(kmu_);
    bits_.Reset();
    reported_.Reset();
    marked_.Reset();
    return Status::Ok();
  }
  Status Stop() override { return Status::Ok(); }
  // The guest writes page `i`.
  void Write(uint64_t i) {
    std::lock_guard klock(kmu_);
    bits_.Set(i);
  }

 protected:
  Status HarvestLocked(PageSet& found) override {
    std::lock_guard klock(kmu_);
    found.Merge(bits_);
    return Status::Ok();
  }
  Status RearmLocked(const PageSet& pages) override {
    std::lock_guard klock(kmu_);
    bits_.Subtract(pages);
    return Status::Ok();
  }

 private:
  std::mutex kmu_;
  PageSet bits_;
};

uint64_t Index(uint64_t gpa) { return (gpa - FakeRegion().gpa) / 4096; }

std::unique_ptr<CheckpointTracker> MakeCp(FakeKvmTracker& t, bool no_dup, uint64_t max_dirty = kPages) {
  CheckpointOptions o;
  o.max_dirty_per_cycle = max_dirty;
  o.no_duplicates = no_dup;
  o.poll_interval = 200us;
  auto cp = CheckpointTracker::Init(t, o);
  EXPECT_TRUE(cp.ok());
  EXPECT_TRUE((*cp)->Enable().ok());
  EXPECT_TRUE((*cp)->PrepareCycle(1).ok());
  return std::move(*cp);
}

std::set<uint64_t> Indices(const capture::dirty::Sublist& s) {
  std::set<uint64_t> out;
  for (uint64_t g : s.gpas) out.insert(Index(g));
  return out;
}

std::set<uint64_t> Indices(const Result<capture::dirty::Sublist>& r) {
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? Indices(r.value()) : std::set<uint64_t>{};
}

TEST(Checkpoint, InitRejectsZeroMaximum) {
  FakeKvmTracker t;
  EXPECT_FALSE(CheckpointTracker::Init(t, CheckpointOptions{}).ok());
}

TEST(Checkpoint, FetchReturnsSublistsOfAtMostNAndTheCycleId) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, false);
  ASSERT_TRUE(cp->PrepareCycle(42).ok());
  for (uint64_t i = 0; i < 10; ++i) t.Write(i * 7);
  auto a = cp->Fetch({.max_pages = 4});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->cycle_id, 42u);
  EXPECT_EQ(a->gpas.size(), 4u);
  auto b = cp->Fetch({.max_pages = 100});
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->gpas.size(), 6u);
  std::set<uint64_t> all = Indices(*a);
  for (uint64_t i : Indices(*b)) all.insert(i);
  EXPECT_EQ(all.size(), 10u);
  EXPECT_EQ(cp->dirty_count(), 10u);
  EXPECT_EQ(a->gpas[0], FakeRegion().gpa);  // page 0 by its guest-physical address
}

TEST(Checkpoint, WaitBlocksUntilNPagesAreDirty) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, false);
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (uint64_t i = 0; i < 8; ++i) {
      std::this_thread::sleep_for(5ms);
      t.Write(i);
      written.fetch_add(1);
    }
  });
  auto s = cp->Fetch({.max_pages = 8, .wait = true});
  int when = written.load();
  writer.join();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->gpas.size(), 8u);
  EXPECT_EQ(when, 8) << "fetch returned before 8 pages were dirty";
  EXPECT_FALSE(s->quiesced);
}

TEST(Checkpoint, QuiesceWakesWaitingFetchersWithWhatIsLeft) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, false);
  for (uint64_t i = 0; i < 5; ++i) t.Write(i);
  std::vector<size_t> got(3, 999);
  std::vector<std::thread> fetchers;
  std::atomic<int> returned{0};
  for (int k = 0; k < 3; ++k) {
    fetchers.emplace_back([&, k] {
      auto s = cp->Fetch({.max_pages = 100, .wait = true});
      if (s.ok() && s->quiesced) got[k] = s->gpas.size();
      returned.fetch_add(1);
    });
  }
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(returned.load(), 0) << "a fetcher did not wait for 100 pages";
  ASSERT_TRUE(cp->MarkQuiesced().ok());
  for (auto& f : fetchers) f.join();
  EXPECT_EQ(got[0] + got[1] + got[2], 5u);
}

TEST(Checkpoint, DisableWakesWaitingFetchersWithAnError) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, false);
  std::atomic<bool> failed{false};
  std::thread f([&] { failed = !cp->Fetch({.max_pages = 10, .wait = true}).ok(); });
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(cp->Disable().ok());
  f.join();
  EXPECT_TRUE(failed.load());
}

TEST(Checkpoint, RearmOnFetchReportsLaterWritesAgain) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, false);
  t.Write(3);
  auto a = cp->Fetch({.max_pages = 10, .rearm = true});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(Indices(*a), std::set<uint64_t>{3});
  EXPECT_TRUE(Indices(cp->Fetch({.max_pages = 10})).empty()) << "re-armed page reported without a write";
  t.Write(3);
  EXPECT_EQ(Indices(cp->Fetch({.max_pages = 10})), std::set<uint64_t>{3});
}

TEST(Checkpoint, WithoutRearmLaterWritesWaitForRearmAll) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, false);
  t.Write(3);
  EXPECT_EQ(Indices(cp->Fetch({.max_pages = 10})), std::set<uint64_t>{3});
  t.Write(3);
  EXPECT_TRUE(Indices(cp->Fetch({.max_pages = 10})).empty()) << "an unarmed page was reported";
  ASSERT_TRUE(cp->RearmAll().ok());
  EXPECT_TRUE(Indices(cp->Fetch({.max_pages = 10})).empty()) << "RearmAll must not report by itself";
  t.Write(3);
  EXPECT_EQ(Indices(cp->Fetch({.max_pages = 10})), std::set<uint64_t>{3});
}

TEST(Checkpoint, NoDuplicatesDefersRewrittenPagesToTheNextCycle) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, true);
  t.Write(9);
  EXPECT_EQ(Indices(cp->Fetch({.max_pages = 10, .rearm = true})), std::set<uint64_t>{9});
  t.Write(9);
  EXPECT_TRUE(Indices(cp->Fetch({.max_pages = 10, .rearm = true})).empty());
  ASSERT_TRUE(cp->PrepareCycle(2).ok());
  auto s = cp->Fetch({.max_pages = 10});
  EXPECT_EQ(s->cycle_id, 2u);
  EXPECT_EQ(Indices(*s), std::set<uint64_t>{9});
}

TEST(Checkpoint, UnfetchedPagesCarryIntoTheNextCycle) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, false);
  for (uint64_t i = 0; i < 6; ++i) t.Write(i);
  EXPECT_EQ(Indices(cp->Fetch({.max_pages = 2})).size(), 2u);
  ASSERT_TRUE(cp->PrepareCycle(2).ok());
  EXPECT_EQ(cp->dirty_count(), 4u);
  EXPECT_EQ(Indices(cp->Fetch({.max_pages = 10})).size(), 4u);
}

TEST(Checkpoint, TriggerFiresOncePerCycleWhenTheCountIsReached) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, false);
  std::atomic<int> kicks{0};
  std::atomic<uint64_t> count_at_kick{0};
  cp->SetDirtyTrigger(50, [&] {
    count_at_kick = cp->dirty_count();
    kicks.fetch_add(1);
  });
  for (uint64_t i = 0; i < 49; ++i) t.Write(i);
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(kicks.load(), 0) << "fired below the trigger";
  for (uint64_t i = 49; i < 80; ++i) t.Write(i);
  for (int i = 0; i < 500 && kicks.load() == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(kicks.load(), 1);
  EXPECT_GE(count_at_kick.load(), 50u);
  std::this_thread::sleep_for(10ms);
  EXPECT_EQ(kicks.load(), 1) << "fired twice in one cycle";
  ASSERT_TRUE(cp->PrepareCycle(2).ok());
  for (uint64_t i = 100; i < 260; ++i) t.Write(i);
  for (int i = 0; i < 500 && kicks.load() == 1; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(kicks.load(), 2) << "not re-armed by PrepareCycle";
}

TEST(Checkpoint, MaximumDirtyCountActsAsATrigger) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, false, /*max_dirty=*/20);
  std::atomic<int> kicks{0};
  cp->SetDirtyTrigger(0, [&] { kicks.fetch_add(1); });
  for (uint64_t i = 0; i < 25; ++i) t.Write(i);
  for (int i = 0; i < 500 && kicks.load() == 0; ++i) std::this_thread::sleep_for(1ms);
  EXPECT_EQ(kicks.load(), 1);
  // Nothing past the maximum is dropped.
  EXPECT_EQ(Indices(cp->Fetch({.max_pages = 100})).size(), 25u);
}

// Several fetching threads while a writer keeps dirtying pages, with
// no_duplicates and re-arm on fetch: every written page is fetched in the
// cycle it was first written, no page twice in a cycle, and writes after a
// page's fetch show up in the next cycle.
TEST(Checkpoint, SeveralFetchersLoseNothingAndNeverDuplicate) {
  FakeKvmTracker t;
  auto cp = MakeCp(t, true);
  std::mt19937_64 rng(7);
  std::vector<uint64_t> writes(30000);
  for (auto& w : writes) w = rng() % kPages;
  std::set<uint64_t> written(writes.begin(), writes.end());

  std::mutex mu;
  std::map<uint64_t, int> fetched_count;
  std::atomic<bool> writer_done{false};
  std::thread writer([&] {
    for (size_t i = 0; i < writes.size(); ++i) {
      t.Write(writes[i]);
      if (i % 1000 == 0) std::this_thread::sleep_for(1ms);
    }
    writer_done = true;
  });
  std::vector<std::thread> fetchers;
  std::atomic<bool> error{false};
  for (int k = 0; k < 4; ++k) {
    fetchers.emplace_back([&] {
      for (;;) {
        auto s = cp->Fetch({.max_pages = 37, .wait = true, .rearm = true});
        if (!s.ok()) { error = true; return; }
        {
          std::lock_guard lock(mu);
          for (uint64_t g : s->gpas) fetched_count[Index(g)]++;
        }
        if (s->quiesced && s->gpas.empty()) return;
      }
    });
  }
  writer.join();
  ASSERT_TRUE(cp->MarkQuiesced().ok());
  for (auto& f : fetchers) f.join();
  ASSERT_FALSE(error.load());
  std::set<uint64_t> got;
  for (auto& [page, n] : fetched_count) {
    EXPECT_EQ(n, 1) << "page " << page << " fetched " << n << " times in one cycle";
    got.insert(page);
  }
  EXPECT_EQ(got, written);
  EXPECT_EQ(cp->dirty_count(), written.size());
  // Next cycle: only pages rewritten after their fetch, each once.
  ASSERT_TRUE(cp->PrepareCycle(2).ok());
  ASSERT_TRUE(cp->MarkQuiesced().ok());
  std::set<uint64_t> next;
  for (;;) {
    auto s = cp->Fetch({.max_pages = 100});
    ASSERT_TRUE(s.ok());
    if (s->gpas.empty()) break;
    for (uint64_t g : s->gpas) EXPECT_TRUE(next.insert(Index(g)).second);
  }
  for (uint64_t p : next) EXPECT_TRUE(written.count(p));
}

// The same operations on real KVM, with each tracker: the guest dirties pages,
// the doorbell quiesces, several threads drain the cycle.
class CheckpointKvmTest : public ::testing::TestWithParam<Mode> {
 protected:
  void SetUp() override {
    if (!HaveKvm()) GTEST_SKIP() << "needs /dev/kvm";
  }
};

TEST_P(CheckpointKvmTest, CyclesOnRealKvm) {
  auto vm = MiniVm::Create(8 << 20, GetParam());
  ASSERT_TRUE(vm.ok()) << vm.status().message();
  std::vector<std::set<uint64_t>> want(3);
  std::vector<uint32_t> table;
  for (int r = 0; r < 3; ++r) {
    for (uint64_t p = 0; p < 200; ++p) {
      uint64_t page = kFirstDataPage + (p * (r + 3)) % 1500;
      want[r].insert(page);
      table.push_back(static_cast<uint32_t>(page));
    }
    table.push_back(kBell);
  }
  table.push_back(kEnd);
  (*vm)->SetTable(table);
  CheckpointOptions o;
  o.max_dirty_per_cycle = 2048;
  o.no_duplicates = true;
  auto cp = CheckpointTracker::Init(*(*vm)->tracker(), o);
  ASSERT_TRUE(cp.ok());
  ASSERT_TRUE((*cp)->Enable().ok());
  ASSERT_TRUE((*cp)->PrepareCycle(1).ok());
  std::vector<std::set<uint64_t>> seen;
  auto bells = (*vm)->Run([&](int n) -> Status {
    VMSNAP_RETURN_IF_ERROR((*cp)->MarkQuiesced());
    std::mutex mu;
    std::set<uint64_t> got;
    bool dup = false;
    std::vector<std::thread> th;
    for (int k = 0; k < 3; ++k) {
      th.emplace_back([&] {
        for (;;) {
          auto s = (*cp)->Fetch({.max_pages = 16, .wait = true});
          if (!s.ok() || s->gpas.empty()) return;
          std::lock_guard lock(mu);
          for (uint64_t g : s->gpas) dup |= !got.insert(g / 4096).second;
        }
      });
    }
    for (auto& x : th) x.join();
    EXPECT_FALSE(dup);
    seen.push_back(got);
    VMSNAP_RETURN_IF_ERROR((*cp)->RearmAll());
    return (*cp)->PrepareCycle(n + 1);
  });
  ASSERT_TRUE(bells.ok()) << bells.status().message();
  EXPECT_EQ(seen, want);
}

// The dirty trigger forces the vCPU out of KVM_RUN once the cycle has the
// chosen number of dirty pages: the guest loops forever, only the kick ends it.
TEST_P(CheckpointKvmTest, TriggerMakesTheVcpuExit) {
  auto vm = MiniVm::Create(64 << 20, GetParam());
  ASSERT_TRUE(vm.ok()) << vm.status().message();
  std::vector<uint32_t> table;
  const uint64_t pages = 12000;
  for (uint64_t p = 0; p < pages; ++p) table.push_back(static_cast<uint32_t>(kFirstDataPage + p));
  table.push_back(kRestart);
  (*vm)->SetTable(table);
  CheckpointOptions o;
  o.max_dirty_per_cycle = 1 << 20;
  o.poll_interval = 200us;
  auto cp = CheckpointTracker::Init(*(*vm)->tracker(), o);
  ASSERT_TRUE(cp.ok());
  ASSERT_TRUE((*cp)->Enable().ok());
  ASSERT_TRUE((*cp)->PrepareCycle(1).ok());
  std::atomic<int> kicks{0};
  (*cp)->SetDirtyTrigger(200, [&] {
    kicks.fetch_add(1);
    (*vm)->Kick();
  });
  uint64_t at_exit = 0;
  // If the trigger never fires, stop the endless guest after a while.
  std::mutex mu;
  std::condition_variable cv;
  bool done = false, timed_out = false;
  std::thread watchdog([&] {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, 30s, [&] { return done; })) {
      timed_out = true;
      (*vm)->Kick();
    }
  });
  auto r = (*vm)->RunKickable([&] {
    EXPECT_TRUE((*cp)->MarkQuiesced().ok());
    at_exit = (*cp)->dirty_count();
    return false;
  });
  {
    std::lock_guard lock(mu);
    done = true;
  }
  cv.notify_all();
  watchdog.join();
  EXPECT_FALSE(timed_out) << "the trigger never made the vCPU exit";
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(*r, -1);
  EXPECT_EQ(kicks.load(), 1);
  EXPECT_GE(at_exit, 200u);
  EXPECT_LE(at_exit, pages);
  // The quiesced cycle hands out exactly what was dirtied before the exit.
  uint64_t fetched = 0;
  for (;;) {
    auto s = (*cp)->Fetch({.max_pages = 64});
    ASSERT_TRUE(s.ok());
    if (s->gpas.empty()) break;
    fetched += s->gpas.size();
  }
  EXPECT_EQ(fetched, at_exit);
}

INSTANTIATE_TEST_SUITE_P(Modes, CheckpointKvmTest, ::testing::Values(Mode::kBitmap, Mode::kRing),
                         [](const ::testing::TestParamInfo<Mode>& p) {
                           return std::string(capture::dirty::ModeName(p.param));
                         });

}  // namespace
}  // namespace vmsnap::testing
