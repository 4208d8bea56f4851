// SPDX-License-Identifier: MIT
// The ring tracker when KVM says a ring is full but the entry at our fetch
// index was never published (seen on this host after an in-kernel emulation
// burst): the tracker must move past it and report every page, not spin on
// ring-full exits forever. KVM cannot be made to do this on demand, so the
// ring is a memfd laid out like a vCPU fd's ring pages and KVM's calls are a
// double.
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <vector>

#include "base/fd.h"
#include "capture/dirty/tracker.h"

namespace vmsnap::testing {
namespace {

using capture::dirty::PageSet;

constexpr uint32_t kRingBytes = 64 * 1024;  // 4096 entries
constexpr uint32_t kEntries = kRingBytes / sizeof(kvm_dirty_gfn);
constexpr uint64_t kPages = 256;

class FakeKvm final : public kvm::dirty::DirtyLogOps {
 public:
  Result<int> CheckExtension(long) override { return 1; }
  Status SetSlotFlags(const kvm::GuestRegion&, uint32_t) override { return Status::Ok(); }
  Status EnableManualProtect(uint64_t) override { return Status::Ok(); }
  Status GetDirtyLog(uint32_t, uint64_t*) override { return Status::Ok(); }
  Status ClearDirtyLog(uint32_t, uint64_t, uint32_t, const uint64_t*) override { return Status::Ok(); }
  Status EnableDirtyRing(uint32_t, bool) override { return Status::Ok(); }
  Result<int> ResetDirtyRings() override {
    ++resets;
    return 0;
  }
  int resets = 0;
};

class RingStuckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const long page = ::sysconf(_SC_PAGESIZE);
    const off_t offset = off_t{KVM_DIRTY_LOG_PAGE_OFFSET} * page;
    int fd = ::memfd_create("fake-vcpu", MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    vcpu_ = UniqueFd(fd);
    ASSERT_EQ(::ftruncate(vcpu_.get(), offset + kRingBytes), 0);
    void* p = ::mmap(nullptr, kRingBytes, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_.get(), offset);
    ASSERT_NE(p, MAP_FAILED);
    ring_ = static_cast<kvm_dirty_gfn*>(p);

    memory_.resize(kPages * 4096);
    kvm::GuestRegion region;
    region.slot = 0;
    region.size = memory_.size();
    region.host = memory_.data();
    region.name = "ram";
    regions_.push_back(region);
    capture::dirty::TrackerOptions options;
    options.ring_bytes = kRingBytes;
    auto t = capture::dirty::CreateRingTracker(kvm_, regions_, options);
    ASSERT_TRUE(t.ok()) << t.status().message();
    tracker_ = std::move(t).value();
    ASSERT_TRUE(tracker_->AttachVcpu(vcpu_.get(), 0).ok());
    ASSERT_TRUE(tracker_->Start().ok());
  }
  void TearDown() override {
    if (ring_) ::munmap(ring_, kRingBytes);
  }

  // What KVM does when a vCPU dirties a page: fill the entry, then publish it.
  void Publish(uint32_t index, uint64_t page) {
    kvm_dirty_gfn& g = ring_[index % kEntries];
    g.slot = 0;
    g.offset = page;
    std::atomic_ref<uint32_t>(g.flags).store(KVM_DIRTY_GFN_F_DIRTY, std::memory_order_release);
  }
  uint32_t FlagsAt(uint32_t index) const { return ring_[index % kEntries].flags; }

  FakeKvm kvm_;
  UniqueFd vcpu_;
  kvm_dirty_gfn* ring_ = nullptr;
  std::vector<uint8_t> memory_;
  std::vector<kvm::GuestRegion> regions_;
  std::unique_ptr<capture::dirty::DirtyTracker> tracker_;
};

TEST_F(RingStuckTest, FullRingWithEntriesIsHarvestedNormally) {
  Publish(0, 3);
  Publish(1, 9);
  ASSERT_TRUE(tracker_->HandleRingFull(0).ok());
  EXPECT_EQ(tracker_->ring_overflows(), 0u);
  EXPECT_EQ(FlagsAt(0), uint32_t{KVM_DIRTY_GFN_F_RESET});
  EXPECT_EQ(FlagsAt(1), uint32_t{KVM_DIRTY_GFN_F_RESET});
  PageSet got(kPages);
  auto n = tracker_->Collect(got);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 2u);
  EXPECT_TRUE(got.Test(3));
  EXPECT_TRUE(got.Test(9));
}

TEST_F(RingStuckTest, FullRingWithNothingPublishedMovesOnAndReportsEveryPage) {
  const int resets_before = kvm_.resets;
  ASSERT_TRUE(tracker_->HandleRingFull(0).ok());
  // The tracker must hand entries back so KVM has room again, and reset.
  EXPECT_EQ(tracker_->ring_overflows(), 1u);
  EXPECT_GT(kvm_.resets, resets_before);
  // Half the ring (KVM keeps a reserve below its soft limit, so less might
  // not let the vCPU run again), and no more (KVM's own index is beyond).
  EXPECT_EQ(FlagsAt(0), uint32_t{KVM_DIRTY_GFN_F_RESET});
  EXPECT_EQ(FlagsAt(kEntries / 2 - 1), uint32_t{KVM_DIRTY_GFN_F_RESET}) << "not half the ring handed back";
  EXPECT_EQ(FlagsAt(kEntries / 2), 0u) << "handed back past half the ring";
  // Writes may have been lost, so the next collect must report everything.
  PageSet all(kPages);
  auto n = tracker_->Collect(all);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, kPages);
  ASSERT_TRUE(tracker_->RearmAll().ok());

  // KVM's next entry lands somewhere past the handed-back half, after a few
  // entries it never wrote: the tracker finds it and passes the gap.
  const uint32_t next = kEntries / 2 + 5;
  Publish(next, 42);
  PageSet got(kPages);
  n = tracker_->Collect(got);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, 1u);
  EXPECT_TRUE(got.Test(42));
  for (uint32_t i = kEntries / 2; i <= next; ++i) {
    EXPECT_EQ(FlagsAt(i), uint32_t{KVM_DIRTY_GFN_F_RESET}) << "entry " << i << " not handed back";
  }
}

}  // namespace
}  // namespace vmsnap::testing
