// SPDX-License-Identifier: MIT
// See opened_chains.h.
#include "vmm/opened_chains.h"

#include "base/cache_dir.h"
#include "restore/restore.h"

namespace vmsnap::vmm {

bool FileStates::Add(const std::string& path) {
  files_.emplace_back(path, FileStampOf(path));
  return !files_.back().second.empty();
}

bool FileStates::Unchanged() const {
  for (const auto& [path, state] : files_) {
    if (FileStampOf(path) != state) return false;
  }
  return true;
}

std::string FileStates::StateOf(const std::string& path) const {
  for (const auto& [p, state] : files_) {
    if (p == path) return state;
  }
  return "";
}

std::optional<OpenedChain> OpenChain(const std::string& path) {
  // The state is taken before the open: a change during it makes the entry
  // stale at once rather than wrongly fresh.
  const std::string leaf = FileStampOf(path);
  if (leaf.empty()) return std::nullopt;
  auto chain = restore::OpenSnapshot(path);
  if (!chain.ok()) return std::nullopt;
  OpenedChain c;
  c.path = path;
  c.chain = std::make_shared<const SnapshotChain>(std::move(chain).value());
  for (const auto& layer : c.chain->layers()) {
    if (!c.files.Add(layer->path())) return std::nullopt;
  }
  if (c.files.StateOf(c.chain->leaf().path()) != leaf) return std::nullopt;
  return c;
}

const OpenedChain* OpenedChains::Find(const std::string& path) const {
  for (const OpenedChain& c : chains_) {
    if (c.path != path) continue;
    return c.files.Unchanged() ? &c : nullptr;
  }
  return nullptr;
}

const OpenedChain* OpenedChains::Remember(const std::string& path) {
  if (const OpenedChain* fresh = Find(path)) return fresh;
  for (auto it = chains_.begin(); it != chains_.end(); ++it) {
    if (it->path == path) {
      chains_.erase(it);
      break;
    }
  }
  std::optional<OpenedChain> c = OpenChain(path);
  if (!c) return nullptr;
  chains_.push_front(std::move(*c));
  while (chains_.size() > kMax) chains_.pop_back();
  return &chains_.front();
}

}  // namespace vmsnap::vmm
