// SPDX-License-Identifier: MIT
// vmsnap export: guest memory (and, for ELF, vCPU registers) of a snapshot
// chain as an ELF64 core, a LiME image or a raw physical image; or the whole
// VM as a QEMU migration stream that QEMU resumes.
#include <cstdio>
#include <string>

#include "format/chain.h"
#include "base/arch.h"
#include "format/output.h"
#include "interop/qemu_x86.h"
#include "tools/command.h"
#include "tools/forensics/export.h"
#include "guest/memory.h"
#include "tools/progress.h"
#include "tools/tool_util.h"

namespace vmsnap::cli {
namespace {

int ExportQemu(const SnapshotChain& chain, const guest::PhysicalMemory& memory, const std::string& out,
               const std::string& machine) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "vmsnap export: %s\n", s.message().c_str());
    return kExitError;
  };
  OutputOptions oo;
  oo.stream_ok = true;
  oo.inputs = tools::ChainPaths(chain);
  oo.what = "export";
  auto file = OutputFile::Create(out, oo);
  if (!file.ok()) return fail(file.status());
  interop::qemu::ExportOptions options;
  options.machine = machine;
  auto done = interop::qemu::FromManifest(
      chain.leaf().manifest(),
      [&memory](uint64_t gpa, uint64_t len, uint8_t* p) { return memory.Read(gpa, len, p); }, options,
      [&file](const uint8_t* p, size_t n) { return (*file)->Append(p, n); });
  if (!done.ok()) return fail(done.status());
  Status committed = (*file)->Commit();
  if (!committed.ok()) return fail(committed);
  if (!tools::Quiet()) {
    for (const std::string& w : done->warnings) std::fprintf(stderr, "vmsnap export: warning: %s\n", w.c_str());
  }
  return kExitOk;
}

int RunExport(const std::string& snapshot, const std::string& format_name, const std::string& out,
              const std::string& machine) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "vmsnap export: %s\n", s.message().c_str());
    return kExitError;
  };
  if (format_name != "qemu" && !machine.empty()) {
    return fail(Status::InvalidArgument("--machine is only for --format qemu"));
  }
  if (format_name == "qemu") {
    auto chain = SnapshotChain::Open(snapshot);
    if (!chain.ok()) return fail(chain.status());
    if (chain->leaf().manifest().getArch() != schema::Arch::X8664) {
      return fail(Status::WrongArch(snapshot + ": --format qemu needs an x86_64 snapshot; this one is " +
                                    ArchName(chain->leaf().manifest().getArch())));
    }
    auto memory = guest::ChainMemory::Create(*chain);
    if (!memory.ok()) return fail(memory.status());
    return ExportQemu(*chain, **memory, out, machine);
  }
  auto format = forensics::ParseExportFormat(format_name);
  if (!format.ok()) return fail(format.status());
  auto chain = SnapshotChain::Open(snapshot);
  if (!chain.ok()) return fail(chain.status());
  auto memory = guest::ChainMemory::Create(*chain);
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
      "export",
      "Write a snapshot's guest memory as an ELF core (gdb, crash), LiME or raw image, or the whole VM "
      "as a QEMU migration stream");
  auto snapshot = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto machine = std::make_shared<std::string>();
  sub->add_option("SNAPSHOT", *snapshot, "Snapshot file (its parents are followed)")->required();
  sub->add_option("--format", *format, "elf, lime, raw or qemu")->required();
  sub->add_option("--machine", *machine,
                  "qemu only: the QEMU machine the stream is for (default: the one an imported snapshot came "
                  "from, else microvm)");
  sub->add_option("-o,--output", *out,
                  "Output file (written to a temporary name, then renamed); '-' for standard output "
                  "(raw, lime and qemu only)")
      ->required();
  sub->footer(
      "--format qemu writes a QEMU 7.2 migration stream of an x86_64 snapshot, which\n"
      "  qemu-system-x86_64 -M microvm -accel kvm|tcg -cpu qemu64 -m SIZE -smp N -nodefaults \\\n"
      "    -incoming 'exec:cat OUTPUT'\n"
      "resumes after the monitor command 'cont' (SIZE and N as in the snapshot; docs/interop-qemu.md "
      "has the full command line). One 'warning:' line is printed per kind of state QEMU cannot take.\n"
      "A FIFO or character device at OUTPUT is written through (raw, lime and qemu); any other existing "
      "path that is not a regular file, and OUTPUT naming the snapshot or one of its parents, is "
      "refused. Exit status: 0 success, 2 error.");
  sub->callback([exit_code, snapshot, format, out, machine] {
    *exit_code = RunExport(*snapshot, *format, *out, *machine);
  });
}

}  // namespace vmsnap::cli
