// SPDX-License-Identifier: MIT
// See opened_chains.h.
#include "vmm/opened_chains.h"

#include "base/cache_dir.h"
#include "restore/restore.h"

namespace vmsnap::vmm {

std::shared_ptr<const SnapshotChain> Cached(const std::deque<OpenedChain>& cache, const std::string& path) {
  for (const OpenedChain& c : cache) {
    if (c.path != path) continue;
    const auto& layers = c.chain->layers();
    for (size_t i = 0; i < layers.size(); ++i) {
      if (FileStampOf(layers[i]->path()) != c.layers[i]) return nullptr;
    }
    return c.chain;
  }
  return nullptr;
}

std::shared_ptr<const SnapshotChain> Remember(std::deque<OpenedChain>& cache, const std::string& path) {
  if (auto fresh = Cached(cache, path)) return fresh;
  for (auto it = cache.begin(); it != cache.end(); ++it) {
    if (it->path == path) {
      cache.erase(it);
      break;
    }
  }
  // The state is taken before the open: a change during it makes the entry
  // stale at once rather than wrongly fresh.
  const std::string leaf = FileStampOf(path);
  if (leaf.empty()) return nullptr;
  auto chain = restore::OpenSnapshot(path);
  if (!chain.ok()) return nullptr;  // the worker that asked reports it
  OpenedChain c;
  c.path = path;
  c.chain = std::make_shared<const SnapshotChain>(std::move(chain).value());
  for (const auto& layer : c.chain->layers()) {
    std::string st = FileStampOf(layer->path());
    if (st.empty()) return nullptr;
    c.layers.push_back(std::move(st));
  }
  if (c.layers.back() != leaf) return nullptr;
  std::shared_ptr<const SnapshotChain> opened = c.chain;
  cache.push_front(std::move(c));
  while (cache.size() > kMaxOpenedChains) cache.pop_back();
  return opened;
}

}  // namespace vmsnap::vmm
