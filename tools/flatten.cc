// SPDX-License-Identifier: MIT
// vmsnap flatten: turn an incremental snapshot and its parents into one
// equivalent full snapshot.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "format/chain.h"
#include "format/compression_spec.h"
#include "format/writer.h"
#include "tools/command.h"
#include "tools/compression_flag.h"
#include "tools/progress.h"
#include "tools/tool_util.h"

namespace vmsnap::cli {
namespace {

struct FlattenOptions {
  std::string input, output;
  std::string compress;  // empty: raw if every input chunk is raw, else zstd:3
};

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i]) return false;
  }
  return true;
}

int RunFlatten(const FlattenOptions& o) {
  auto chain = SnapshotChain::Open(o.input);
  if (!chain.ok()) return tools::Fail("flatten", o.input, chain.status(), kExitError);
  const SnapshotReader& leaf = chain->leaf();
  auto lm = leaf.manifest();
  const uint64_t ps = leaf.page_size();

  // The writer reads the memory we hand it until its progress callback
  // reports it done (writer.h promises that), so `released` bytes of what
  // we added are free again.
  std::atomic<uint64_t> released{0};
  WriterOptions wo;
  wo.page_size = static_cast<uint32_t>(ps);
  // Chunks of about 1 MiB whatever the page size (the default 256 pages of
  // 1 MiB would pass the format's 64 MiB limit).
  wo.chunk_pages = static_cast<uint32_t>(std::clamp<uint64_t>((1u << 20) / ps, 1, 256));
  CompressionSpec spec = DefaultSaveCompression();
  if (!o.compress.empty()) {
    auto parsed = ParseCompressionSpec(o.compress);
    if (!parsed.ok()) return tools::Fail("flatten", "", parsed.status(), kExitError);
    spec = *parsed;
  } else {
    bool all_raw = lm.getChunks().size() > 0;
    for (auto c : lm.getChunks()) all_raw &= c.getCompression() == schema::Compression::NONE;
    if (all_raw) spec.codec = schema::Compression::NONE;  // keep a mappable chain mappable
  }
  Apply(spec, wo);
  wo.progress = [&released](uint64_t done, uint64_t) { released.store(done); };
  wo.inputs = tools::ChainPaths(*chain);
  // The writer's threads read these buffers until it is destroyed, so they
  // are declared first and outlive it, however the function returns.
  struct Buffer {
    uint64_t added_end;  // bytes added to the writer up to and including this one
    std::vector<uint8_t> bytes;
  };
  std::deque<Buffer> in_flight;
  std::vector<std::vector<uint8_t>> spare;
  auto writer = SnapshotWriter::Create(o.output, wo);
  if (!writer.ok()) return tools::Fail("flatten", o.output, writer.status(), kExitError);
  SnapshotWriter& w = *writer.value();

  auto mb = w.manifest();
  mb.setArch(lm.getArch());
  mb.setCreated(lm.getCreated());
  mb.setSave(lm.getSave());
  // The save figures are the leaf's, but the memory is stored as we store it.
  mb.getSave().setCompression(ToString(spec));
  mb.setMemory(lm.getMemory());
  mb.setVcpus(lm.getVcpus());
  mb.setVm(lm.getVm());
  mb.setDevices(lm.getDevices());
  // No parent: that is the point.

  std::vector<std::pair<uint64_t, uint64_t>> regions;
  uint64_t total = 0;
  for (auto r : lm.getMemory().getRegions()) {
    regions.push_back({r.getGuestPhysAddr(), r.getSize()});
    total += r.getSize();
  }
  std::sort(regions.begin(), regions.end());

  tools::ProgressBar bar("flattening", total);
  const uint64_t window = std::max<uint64_t>(ps * wo.chunk_pages, ps);
  uint64_t added = 0, done = 0, next_free = 0;
  for (auto [start, size] : regions) {
    uint64_t end = start + size;
    uint64_t gpa = std::max(start, next_free);  // overlapping regions: each page once
    for (; gpa < end;) {
      uint64_t len = std::min(window, end - gpa);
      while (!in_flight.empty() && in_flight.front().added_end <= released.load()) {
        spare.push_back(std::move(in_flight.front().bytes));
        in_flight.pop_front();
      }
      std::vector<uint8_t> buf;
      if (!spare.empty()) {
        buf = std::move(spare.back());
        spare.pop_back();
      }
      buf.resize(window);
      Status s = chain->ReadMemory(gpa, len, buf.data());
      if (!s.ok()) return tools::Fail("flatten", o.input, s, kExitError);
      // Pages no chunk defines are zero in a full snapshot: an all-zero
      // window need not be handed to the writer at all.
      if (!AllZero(buf.data(), len)) {
        s = w.AddMemory(gpa, buf.data(), len);
        if (!s.ok()) return tools::Fail("flatten", o.output, s, kExitError);
        added += len;
        in_flight.push_back({added, std::move(buf)});
      } else {
        spare.push_back(std::move(buf));
      }
      done += len;
      bar.Update(done);
      gpa += len;
    }
    next_free = std::max(next_free, end);
  }
  Status s = w.Commit();
  bar.Finish();
  if (!s.ok()) return tools::Fail("flatten", o.output, s, kExitError);
  return kExitOk;
}

}  // namespace

void RegisterFlatten(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<FlattenOptions>();
  CLI::App* sub = app.add_subcommand(
      "flatten",
      "Write the full snapshot equivalent to an incremental one: the leaf's vCPU, VM and device "
      "state and memory map, and the guest memory the whole parent chain adds up to. The result "
      "has no parent and can be loaded, inspected or diffed on its own.");
  sub->add_option("SNAPSHOT", o->input, "Snapshot to flatten (any snapshot; a full one is copied)")
      ->required();
  sub->add_option("-o,--output", o->output, "Where to write the full snapshot")->required();
  AddCompressFlag(sub, o->compress,
                  "compression of the output (default: none if every chunk of SNAPSHOT is raw, else auto)");
  sub->footer(
      "The output is written to a temporary name beside OUTPUT and renamed into place only when "
      "complete; it is created mode 0600. Exit status: 0 success, 2 error.");
  sub->callback([o, exit_code] { *exit_code = RunFlatten(*o); });
}

}  // namespace vmsnap::cli
