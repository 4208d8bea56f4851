// SPDX-License-Identifier: MIT
// Snapshots a `serve` server has opened, inherited by every warm VM's
// process it forks after: a worker whose client names one of them skips
// opening and validating the manifest (most of a start's own work before
// the VM runs). Each is keyed by its path and checked against the state of
// every layer's file, so a file replaced or modified since is opened afresh.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "format/chain.h"

namespace vmsnap::vmm {

struct OpenedChain {
  std::string path;
  std::vector<std::string> layers;  // FileStamp of each, as when opened, root first
  std::shared_ptr<const SnapshotChain> chain;
};
constexpr size_t kMaxOpenedChains = 8;

// The chain for `path` if `cache` holds it and no layer's file changed.
std::shared_ptr<const SnapshotChain> Cached(const std::deque<OpenedChain>& cache, const std::string& path);

// Opens `path` into `cache` (most recent first) unless it is there already;
// returns its chain, or null when it cannot be opened.
std::shared_ptr<const SnapshotChain> Remember(std::deque<OpenedChain>& cache, const std::string& path);

}  // namespace vmsnap::vmm
