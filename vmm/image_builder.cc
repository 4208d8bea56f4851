// SPDX-License-Identifier: MIT
// See image_builder.h.
#include "vmm/image_builder.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "base/cache_dir.h"
#include "format/layout.h"

namespace vmsnap::vmm {

ImageBuilder::ImageBuilder(std::string dir, uint64_t max_bytes)
    : cache_(dir), on_(!dir.empty()), max_bytes_(max_bytes) {
  Trim("");
}

void ImageBuilder::Want(std::shared_ptr<const SnapshotChain> chain) {
  if (!on_ || !chain) return;
  const std::string id = layout::IdToHex(chain->leaf().id());
  timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);  // as file times are
  used_[id] = int64_t(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
  const std::string leaf = FileStampOf(chain->leaf().path());
  if (leaf.empty()) return;
  auto tried = tried_.find(id);
  if (tried != tried_.end() && tried->second == leaf) return;
  if (cache_.OpenFresh(*chain).valid()) return;
  tried_[id] = leaf;
  queue_.push_back(std::move(chain));
}

void ImageBuilder::Ended() {
  const std::string built = building_ ? layout::IdToHex(building_->leaf().id()) : "";
  pid_ = -1;
  done_.Reset();
  building_.reset();
  Trim(built);
}

void ImageBuilder::Next(const std::function<void()>& close_in_child, const ReleaseFn& release) {
  if (pid_ >= 0) return;
  std::shared_ptr<const SnapshotChain> chain;
  while (!chain && (waiting_ || !queue_.empty())) {
    if (waiting_) {
      chain = std::move(waiting_);
    } else {
      chain = std::move(queue_.front());
      queue_.pop_front();
    }
    const Room room = MakeRoom(*chain, release);
    if (room == Room::kWait) {
      waiting_ = std::move(chain);
      return;
    }
    if (room == Room::kNo) chain.reset();
  }
  if (!chain) return;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return;
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t server = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(p[0]);
    ::close(p[1]);
    return;
  }
  if (pid == 0) {
    ::close(p[0]);
    close_in_child();
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != server) ::_exit(0);
    (void)::setpriority(PRIO_PROCESS, 0, 19);
    // A failure (a chunk that fails its checksum, a full disk) is the
    // worker's to report when it pages that snapshot in; the image is
    // only an optimisation.
    ::_exit(cache_.Build(*chain).ok() ? 0 : 1);
  }
  ::close(p[1]);
  pid_ = pid;
  done_.Reset(p[0]);
  building_ = std::move(chain);
}

void ImageBuilder::Stop() {
  if (pid_ < 0) return;
  ::kill(pid_, SIGKILL);
  pollfd f{done_.get(), POLLIN, 0};
  (void)::poll(&f, 1, 2000);
  cache_.RemoveUnfinished(*building_, pid_);
  Ended();
}

ImageBuilder::Room ImageBuilder::MakeRoom(const SnapshotChain& chain, const ReleaseFn& release) {
  memory::ImageCache::Made made = cache_.MakeRoom(chain, used_);
  for (const std::string& id : made.removed) tried_.erase(id);
  if (made.room.ok()) return Room::kYes;
  if (!made.in_use.empty() && release(made.in_use)) return Room::kWait;
  std::fprintf(stderr, "vmsnap serve: %s\n", made.room.message().c_str());
  return Room::kNo;
}

void ImageBuilder::Trim(const std::string& built) {
  if (!on_ || max_bytes_ == 0) return;
  for (const std::string& id : cache_.Trim(max_bytes_, used_, built)) tried_.erase(id);
}

}  // namespace vmsnap::vmm
