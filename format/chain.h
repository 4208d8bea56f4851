// SPDX-License-Identifier: MIT
// A snapshot and its parents, oldest first, as one guest memory image.
// Opening follows each ParentRef (path relative to the child's directory),
// and checks the parent's snapshot id against the one the child recorded.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "format/reader.h"
#include "base/status.h"

namespace vmsnap {

// Where a child's recorded parent path points: the path itself when
// absolute, else relative to the child's directory. Every reader of a chain
// (local, pulled, cached) resolves parents through this one rule.
std::string ParentPathOf(const std::string& child_path, const std::string& recorded);

// The parent `child` names (it must have one), opened and checked to be the
// file the child was made on (its snapshot id) with the child's page size.
// Errors: NotFound("parent snapshot <path> of <child> is missing"),
// Corruption("parent snapshot <path> of <child> is not the recorded file (id
// X, expected Y)"), or the parent's own error with that context.
Result<std::unique_ptr<SnapshotReader>> OpenParent(const SnapshotReader& child, const ReaderOptions& options = {});

class SnapshotChain {
 public:
  // Errors: "parent snapshot <path> of <child> is missing", "parent snapshot
  // <path> of <child> is not the recorded file (id X, expected Y)".
  static Result<SnapshotChain> Open(const std::string& leaf_path, const ReaderOptions& options = {});
  // One file alone, whatever parent it names: pages it does not define read
  // as zero (for examining a single layer).
  static SnapshotChain FromReader(std::unique_ptr<SnapshotReader> reader) {
    SnapshotChain c;
    c.layers_.push_back(std::move(reader));
    return c;
  }

  // layers()[0] is the full snapshot at the root, back() the leaf.
  const std::vector<std::unique_ptr<SnapshotReader>>& layers() const { return layers_; }
  const SnapshotReader& leaf() const { return *layers_.back(); }

  // Where the current content of each page comes from.
  struct PageSource {
    int layer = -1;        // -1: no layer defines it: zero
    uint32_t chunk = 0;
    uint32_t page = 0;     // index within the chunk
    bool stored = false;   // false: zero
  };
  PageSource Locate(uint64_t gpa) const;

  // Guest-physical memory [gpa, gpa+len) as of the leaf, into `out`. Pages no
  // region covers read as zero. Checks every chunk it uses.
  Status ReadMemory(uint64_t gpa, uint64_t len, uint8_t* out) const;

 private:
  std::vector<std::unique_ptr<SnapshotReader>> layers_;
};

}  // namespace vmsnap
