// SPDX-License-Identifier: MIT
// vmsnap verify: check every checksum and decompress every chunk of a snapshot
// and of its parents.
#include <cstdio>
#include <memory>
#include <string>

#include "format/chain.h"
#include "format/reader.h"
#include "tools/command.h"
#include "tools/progress.h"
#include "tools/tool_util.h"

namespace vmsnap::cli {
namespace {

// 1 when the file was read and a check failed, 2 when it could not be read
// (missing, not a regular file, I/O error, a newer format): a script can tell
// a damaged snapshot from a failed call.
int ExitFor(const Status& s) { return s.code() == Code::kCorruption ? kExitVerifyCorrupt : kExitError; }

int RunVerify(const std::string& path) {
  // Open() alone checks the header, footer, manifest checksum and chunk index;
  // the chain additionally checks each parent's id against its child's record.
  auto leaf = SnapshotReader::Open(path);
  if (!leaf.ok()) return tools::Fail("verify", path, leaf.status(), ExitFor(leaf.status()));
  std::vector<const SnapshotReader*> layers;
  std::unique_ptr<SnapshotChain> chain;
  if (leaf.value()->manifest().hasParent()) {
    auto c = SnapshotChain::Open(path);
    if (!c.ok()) return tools::Fail("verify", path, c.status(), ExitFor(c.status()));
    chain = std::make_unique<SnapshotChain>(std::move(c).value());
    for (const auto& l : chain->layers()) layers.push_back(l.get());
  } else {
    layers.push_back(leaf.value().get());
  }
  uint64_t total = 0, chunks = 0, bytes = 0;
  for (const SnapshotReader* l : layers) total += l->file_size();
  tools::ProgressBar bar("verifying", total);
  uint64_t base = 0;
  for (const SnapshotReader* l : layers) {
    uint64_t size = l->file_size();
    // VerifyAll reports its own (done, total); scale it to this layer's share.
    Status s = l->VerifyAll([&](uint64_t done, uint64_t t) {
      bar.Update(base + (t ? static_cast<uint64_t>(static_cast<double>(done) / t * size) : 0));
    });
    if (!s.ok()) {
      bar.Finish();
      return tools::Fail("verify", l->path(), s, ExitFor(s));
    }
    base += size;
    chunks += l->manifest().getChunks().size();
    bytes += size;
  }
  bar.Finish();
  std::printf("%s: ok (%llu chunks, %llu bytes", path.c_str(), static_cast<unsigned long long>(chunks),
              static_cast<unsigned long long>(bytes));
  if (layers.size() > 1) std::printf("; chain of %zu snapshots", layers.size());
  std::printf(")\n");
  return kExitOk;
}

}  // namespace

void RegisterVerify(CLI::App& app, int* exit_code) {
  auto path = std::make_shared<std::string>();
  CLI::App* sub = app.add_subcommand(
      "verify",
      "Check a snapshot end to end: header, footer and manifest checksums, every chunk's stored "
      "and decompressed checksum (every chunk is decompressed), and that every other byte is "
      "the zero padding the layout puts between them, so any changed byte is found. For an incremental snapshot, "
      "every parent is found, checked against the id its child recorded, and verified too.");
  sub->add_option("SNAPSHOT", *path, "Snapshot file (.vmsnap), rados://POOL/NAME or s3://BUCKET/PREFIX/NAME (every chunk fetched and checked)")->required();
  sub->footer(
      "Prints \"SNAPSHOT: ok (N chunks, M bytes)\" (chunks and file bytes checked, over the whole "
      "chain) or one line naming the first problem (section or chunk and file offset).\n"
      "Exit status: 0 intact; 1 corrupt (the file was read and a check failed: the message names "
      "the chunk, its guest-physical range and file offset, or the file offset); 2 usage error, "
      "or a file that cannot be read (missing, not a regular file, I/O error, newer format).");
  sub->callback([path, exit_code] {
    *exit_code = tools::ResolveSnapshotArg(*path, "verify", kExitError);
    if (*exit_code == 0) *exit_code = RunVerify(*path);
  });
}

}  // namespace vmsnap::cli
