// SPDX-License-Identifier: MIT
// vmsnap export: guest memory (and, for ELF, vCPU registers) of a snapshot
// chain as an ELF64 core, a LiME image or a raw physical image.
#include <cstdio>
#include <string>

#include "format/chain.h"
#include "tools/command.h"
#include "tools/forensics/export.h"
#include "tools/forensics/memory.h"
#include "tools/progress.h"
#include "tools/tool_util.h"

namespace vmsnap::cli {
namespace {

int RunExport(const std::string& snapshot, const std::string& format_name, const std::string& out) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "vmsnap export: %s\n", s.message().c_str());
    return kExitError;
  };
  auto format = forensics::ParseExportFormat(format_name);
  if (!format.ok()) return fail(format.status());
  auto chain = SnapshotChain::Open(snapshot);
  if (!chain.ok()) return fail(chain.status());
  auto memory = forensics::ChainMemory::Create(*chain);
  if (!memory.ok()) return fail(memory.status());

  uint64_t total = 0;
  for (const auto& r : (*memory)->regions()) total += r.size;
  tools::ProgressBar progress("exporting", total);
  forensics::ExportOptions options;
  options.inputs = tools::ChainPaths(*chain);
  options.progress = [&progress](uint64_t done, uint64_t) { progress.Update(done); };
  auto stats = forensics::Export(**memory, chain->leaf().manifest(), *format, out, options);
  progress.Finish();
  if (!stats.ok()) return fail(stats.status());
  return kExitOk;
}

}  // namespace

void RegisterExport(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand(
      "export", "Write a snapshot's guest memory as an ELF core (gdb, crash), LiME or raw image");
  auto snapshot = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  sub->add_option("SNAPSHOT", *snapshot, "Snapshot file (its parents are followed)")->required();
  sub->add_option("--format", *format, "elf, lime or raw")->required();
  sub->add_option("-o,--output", *out,
                  "Output file (written to a temporary name, then renamed); '-' for standard output "
                  "(raw and lime only)")
      ->required();
  sub->footer(
      "A FIFO or character device at OUTPUT is written through (raw and lime); any other existing "
      "path that is not a regular file, and OUTPUT naming the snapshot or one of its parents, is "
      "refused. Exit status: 0 success, 2 error.");
  sub->callback([exit_code, snapshot, format, out] { *exit_code = RunExport(*snapshot, *format, *out); });
}

}  // namespace vmsnap::cli
