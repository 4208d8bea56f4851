// SPDX-License-Identifier: MIT
// vmsnap: the command-line entry point. One subcommand per tools/<name>.cc.
#include <cstdio>
#include <cstring>
#include <string>

#include "format/layout.h"
#include "tools/command.h"
#ifdef VMSNAP_HAVE_X86_KVM
#include "include/vmsnap/vmsnap.h"
#endif

namespace {

struct Entry {
  const char* name;
  vmsnap::cli::RegisterFn fn;
  int usage_exit;  // exit status for a usage error in this subcommand
};

// Every subcommand, in the order `vmsnap --help` lists them.
constexpr Entry kCommands[] = {
    {"run", vmsnap::cli::RegisterRun, vmsnap::cli::kExitVmmFailed},
    {"load", vmsnap::cli::RegisterLoad, vmsnap::cli::kExitVmmFailed},
    {"save", vmsnap::cli::RegisterSave, vmsnap::cli::kExitError},
    {"inspect", vmsnap::cli::RegisterInspect, vmsnap::cli::kExitError},
    {"diff", vmsnap::cli::RegisterDiff, vmsnap::cli::kExitError},
    {"verify", vmsnap::cli::RegisterVerify, vmsnap::cli::kExitError},
    {"flatten", vmsnap::cli::RegisterFlatten, vmsnap::cli::kExitError},
    {"export", vmsnap::cli::RegisterExport, vmsnap::cli::kExitError},
    {"read", vmsnap::cli::RegisterRead, vmsnap::cli::kExitError},
    {"translate", vmsnap::cli::RegisterTranslate, vmsnap::cli::kExitError},
};

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
  return std::string("vmsnap ") + VMSNAP_VERSION + "\nlibvmsnap " + lib + "\nfile format " +
         std::to_string(major) + "." + std::to_string(minor);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"vmsnap: save, restore and examine the complete state of KVM virtual machines"};
  app.require_subcommand(1);
  app.set_version_flag("--version", VersionText());
  int exit_code = vmsnap::cli::kExitOk;
  for (const Entry& e : kCommands) e.fn(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // One line, naming the subcommand, then the exit status the contract gives it.
    int status = vmsnap::cli::kExitError;
    std::string where = "vmsnap";
    for (const Entry& c : kCommands) {
      if (app.got_subcommand(c.name)) {
        status = c.usage_exit;
        where += std::string(" ") + c.name;
      }
    }
    std::fprintf(stderr, "%s: %s (try --help)\n", where.c_str(), e.what());
    return status;
  }
  return exit_code;
}
