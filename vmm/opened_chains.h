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
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "format/chain.h"

namespace vmsnap::vmm {

// The state of some files (FileStamp: device, inode, size, mtime, ctime)
// when they were added, to tell with a few stats whether any of them was
// replaced, modified, created or removed since.
class FileStates {
 public:
  // Adds `path` as it is now; false when it does not exist (which is then
  // its state).
  bool Add(const std::string& path);
  // Whether every file is as when added.
  bool Unchanged() const;
  // The state `path` was added with ("" when missing or not added).
  std::string StateOf(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, std::string>> files_;  // path, FileStamp
};

// A snapshot as opened, with the state of every layer's file before its
// manifest was read: a change during the open shows as a change.
struct OpenedChain {
  std::string path;
  std::shared_ptr<const SnapshotChain> chain;
  FileStates files;
};

// Opens `path`; nullopt when it cannot be opened (a worker that loads it
// reports why) or changed while it was opened.
std::optional<OpenedChain> OpenChain(const std::string& path);

class OpenedChains {
 public:
  // The snapshot at `path` if it is held and no layer's file changed; null
  // otherwise. Valid until the next Remember.
  const OpenedChain* Find(const std::string& path) const;
  // Find, else opens `path` and holds it (the most recent first, at most
  // kMax); null when it cannot be opened.
  const OpenedChain* Remember(const std::string& path);

 private:
  static constexpr size_t kMax = 8;
  std::deque<OpenedChain> chains_;
};

}  // namespace vmsnap::vmm
