// SPDX-License-Identifier: MIT
// Live snapshots: see live.h.
#include "capture/dirty/live.h"

#include <chrono>
#include <cstring>

namespace vmsnap::capture::dirty {

Result<std::unique_ptr<ShadowMemory>> ShadowMemory::Create(const PageLayout& layout) {
  auto s = std::unique_ptr<ShadowMemory>(new ShadowMemory(layout));
  for (const auto& r : layout.regions()) {
    auto map = Mapping::Anonymous(r.size, "shadow");
    if (!map.ok()) return Status::Io("live save: cannot map a " + std::to_string(r.size) + "-byte shadow of " + r.name);
    kvm::GuestRegion v = r;
    v.host = map->data();
    s->maps_.push_back(std::move(map).value());
    s->regions_.push_back(v);
  }
  return s;
}

void ShadowMemory::CopyAll() {
  const auto& src = layout_.regions();
  for (size_t i = 0; i < src.size(); ++i) std::memcpy(regions_[i].host, src[i].host, src[i].size);
}

void ShadowMemory::CopyPages(const PageSet& pages) {
  const uint32_t ps = layout_.page_size();
  pages.ForEach([&](uint64_t index) {
    size_t r = layout_.RegionOfIndex(index);
    uint64_t off = (index - layout_.first_index(r)) * ps;
    std::memcpy(regions_[r].host + off, layout_.regions()[r].host + off, ps);
  });
}

Result<std::unique_ptr<FrozenArchState>> FrozenArchState::Freeze(ArchCapturer& arch) {
  auto f = std::unique_ptr<FrozenArchState>(new FrozenArchState());
  f->arch_ = arch.arch();
  f->page_size_ = arch.page_size();
  f->message_ = std::make_unique<capnp::MallocMessageBuilder>();
  VMSNAP_RETURN_IF_ERROR(arch.Capture(f->message_->initRoot<schema::Manifest>()));
  return f;
}

Status FrozenArchState::Capture(schema::Manifest::Builder manifest) {
  auto src = message_->getRoot<schema::Manifest>().asReader();
  manifest.setArch(src.getArch());
  if (src.hasVcpus()) manifest.setVcpus(src.getVcpus());
  if (src.hasVm()) manifest.setVm(src.getVm());
  return Status::Ok();
}

Result<LiveStats> RunLiveCopy(ShadowMemory& shadow, const LiveHooks& hooks, const LiveOptions& options) {
  LiveStats stats;
  // Pages dirtied before now are in memory now: forget them (they are
  // re-armed, so later writes are caught) and copy everything.
  VMSNAP_RETURN_IF_ERROR(hooks.collect().status());
  shadow.CopyAll();
  stats.rounds = 1;
  stats.round_pages.push_back(0);  // the full round; filled below
  uint64_t prev = UINT64_MAX;
  PageSet carry;
  bool have_carry = false;
  uint32_t max_rounds = options.max_rounds ? options.max_rounds : 1;
  while (stats.rounds < max_rounds) {
    VMSNAP_ASSIGN_OR_RETURN(PageSet dirty, hooks.collect());
    uint64_t n = dirty.Count();
    if (n >= prev) {
      // Not shrinking: more rounds would not shorten the pause.
      carry = std::move(dirty);
      have_carry = true;
      break;
    }
    shadow.CopyPages(dirty);
    ++stats.rounds;
    stats.round_pages.push_back(n);
    prev = n;
    if (n <= options.converged_pages) break;
  }
  auto t0 = std::chrono::steady_clock::now();
  hooks.pause();
  Result<PageSet> last = hooks.collect();
  Status s = last.status();
  if (s.ok()) {
    if (have_carry) last->Merge(carry);
    shadow.CopyPages(*last);
    stats.round_pages.push_back(last->Count());
    ++stats.rounds;
    s = hooks.while_paused();
  }
  hooks.resume();
  stats.pause_ns = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  VMSNAP_RETURN_IF_ERROR(s);
  stats.round_pages[0] = shadow.total_pages();
  return stats;
}

}  // namespace vmsnap::capture::dirty
