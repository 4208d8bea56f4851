// SPDX-License-Identifier: MIT
// vmsnap: the command-line entry point. One subcommand per tools/<name>.cc.
#include <signal.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include <kj/exception.h>

#include "format/layout.h"
#include "format/output.h"
#include "tools/command.h"
#include "tools/progress.h"
#ifdef VMSNAP_HAVE_X86_KVM
#include "include/vmsnap/vmsnap.h"
#endif

namespace {

struct Entry {
  const char* name;
  vmsnap::cli::RegisterFn fn;  // null: a VM command this build lacks
};

// The commands that run a VM exist where this build has x86-64 KVM; in the
// others (the portable cross builds) they are listed, and say so.
#ifdef VMSNAP_HAVE_X86_KVM
#define VMSNAP_KVM_COMMAND(fn) fn
#else
#define VMSNAP_KVM_COMMAND(fn) nullptr
#endif

// Every subcommand, in the order `vmsnap --help` lists them.
constexpr Entry kCommands[] = {
    {"run", VMSNAP_KVM_COMMAND(vmsnap::cli::RegisterRun)},
    {"load", VMSNAP_KVM_COMMAND(vmsnap::cli::RegisterLoad)},
    {"save", VMSNAP_KVM_COMMAND(vmsnap::cli::RegisterSave)},
    {"inspect", vmsnap::cli::RegisterInspect},
    {"diff", vmsnap::cli::RegisterDiff},
    {"verify", vmsnap::cli::RegisterVerify},
    {"flatten", vmsnap::cli::RegisterFlatten},
    {"export", vmsnap::cli::RegisterExport},
    {"read", vmsnap::cli::RegisterRead},
    {"translate", vmsnap::cli::RegisterTranslate},
    {"import", vmsnap::cli::RegisterImport},
    {"serve", VMSNAP_KVM_COMMAND(vmsnap::cli::RegisterServe)},
#ifdef VMSNAP_HAVE_STORE
    {"push", vmsnap::cli::RegisterPush},
    {"pull", vmsnap::cli::RegisterPull},
    {"ls", vmsnap::cli::RegisterLs},
    {"gc", vmsnap::cli::RegisterGc},
#endif
};

// SIGINT/SIGTERM/SIGHUP: remove the temporary file of any output being
// written, then let the signal end the process as it would have.
void OnTerminatingSignal(int sig) {
  vmsnap::RemoveTemporaryOutputs();
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

void InstallSignalCleanup() {
  struct sigaction sa {};
  sa.sa_handler = OnTerminatingSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  // A socket whose far end died (an OSD killed, a gateway gone, a client
  // of `serve` that left) must be an error the command reports: librados,
  // and libcurl told not to touch signals, can write to one and raise
  // SIGPIPE, which would end the process without a word. The Ceph tools
  // ignore it too; a write to a closed pipe then fails with EPIPE.
  ::signal(SIGPIPE, SIG_IGN);
}

// The tool's, the library's and the file format's versions: a file written
// by this tool carries the format version, a program linked against
// libvmsnap sees the library's (docs/library.md says what bumps each).
std::string VersionText() {
  std::string lib = VMSNAP_VERSION;
  uint16_t major = vmsnap::layout::kMajor, minor = vmsnap::layout::kMinor;
#ifdef VMSNAP_HAVE_X86_KVM
  lib = vmsnap_version();
  vmsnap_format_version(&major, &minor);
#endif
  return std::string("vmsnap ") + VMSNAP_VERSION + "\nlibrary libvmsnap " + lib + "\nfile format " +
         std::to_string(major) + "." + std::to_string(minor);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmsnap: save, restore and examine the complete state of KVM virtual machines"};
  app.require_subcommand(1);
  app.set_version_flag("--version", VersionText());
  int exit_code = vmsnap::cli::kExitOk;
  std::string names;
  for (const Entry& e : kCommands) names += names.empty() ? e.name : std::string(", ") + e.name;
  // Only the named subcommand is built when there is one: building all of
  // them is most of a short command's own start-up (`load --via`, whose
  // whole run is a few milliseconds). Without one (--help, --version) all
  // are, so that the help lists them.
  const char* only = argc > 1 && argv[1][0] != '-' ? argv[1] : nullptr;
  for (const Entry& e : kCommands) {
    if (only != nullptr && std::strcmp(only, e.name) != 0) continue;
    if (e.fn != nullptr) {
      e.fn(app, &exit_code);
    } else {
      CLI::App* stub = app.add_subcommand(e.name, "(needs an x86-64 host with KVM)");
      stub->allow_extras();
      stub->callback([&exit_code, name = e.name, status = vmsnap::cli::FailureExit(e.name)] {
        std::fprintf(stderr, "vmsnap %s: this build has no x86-64 KVM support\n", name);
        exit_code = status;
      });
    }
    // Every command takes them, so a script need not know which ones are long.
    CLI::App* sub = app.get_subcommand(e.name);
    sub->add_flag_callback("-q,--quiet", [] { vmsnap::tools::SetProgressMode(vmsnap::tools::ProgressMode::kQuiet); },
                           "No progress bar and no warnings");
    sub->add_flag_callback("--progress", [] { vmsnap::tools::SetProgressMode(vmsnap::tools::ProgressMode::kForce); },
                           "Draw the progress bar even when stderr is not a terminal");
  }
  // CLI11 would say "A subcommand is required" for a misspelt one.
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const Entry& e : kCommands) known |= std::strcmp(argv[1], e.name) == 0;
    if (!known) {
      std::fprintf(stderr, "vmsnap: unknown command '%s' (commands: %s; try --help)\n", argv[1], names.c_str());
      return vmsnap::cli::kExitError;
    }
  }
  InstallSignalCleanup();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // One line, naming the subcommand, then the exit status the contract gives it.
    int status = vmsnap::cli::kExitError;
    std::string where = "vmsnap";
    for (const Entry& c : kCommands) {
      bool got = false;
      for (const CLI::App* sub : app.get_subcommands()) got |= sub->get_name() == c.name;
      if (got) {
        status = vmsnap::cli::FailureExit(c.name);
        where += std::string(" ") + c.name;
      }
    }
    std::fprintf(stderr, "%s: %s (try --help)\n", where.c_str(), e.what());
    return status;
  } catch (const kj::Exception& e) {
    // The readers turn malformed input into errors; this is the last line
    // of defence against one that slipped through: one line, no abort.
    std::fprintf(stderr, "vmsnap: internal error reading a snapshot: %s\n", e.getDescription().cStr());
    return vmsnap::cli::kExitError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmsnap: internal error: %s\n", e.what());
    return vmsnap::cli::kExitError;
  }
  return exit_code;
}
