// SPDX-License-Identifier: MIT
// vmsnap: the program a user runs. It runs `vmsnap load --via SOCKET
// SNAPSHOT` itself, in the plain forms below, and hands every other command
// line unchanged (execv) to the whole tool, which is installed at
// VMSNAP_TOOL_PATH relative to this program's own directory (main.cc).
//
// Why two programs: the whole `load --via` of a warm start takes a few
// milliseconds, and the whole tool's own start-up (mapping and relocating
// several MB of code, its static initialisers, building its command-line
// parser) was 0.7-1.2 ms of that. This program starts about as fast as
// /bin/true; every other command pays for one more exec, about half a
// millisecond (docs/performance.md).
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "tools/exit_status.h"
#include "tools/load_via.h"

namespace {

using vmsnap::cli::LoadViaArgs;

// `load` with SNAPSHOT and --via, and otherwise only --serial,
// --snapshot-on-doorbell (each at most once, as "--opt VALUE" or
// "--opt=VALUE"), -q/--quiet and --progress (which change nothing here).
// Anything else (--help, another option, an option twice, a value that
// looks like an option, "--") is left to the whole tool, whose parser gives
// the answer or the error: nullopt.
std::optional<LoadViaArgs> PlainLoadVia(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "load") != 0) return std::nullopt;
  LoadViaArgs a;
  bool have_via = false, have_serial = false, have_doorbell = false, have_snapshot = false;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-q" || arg == "--quiet" || arg == "--progress") continue;
    if (arg.empty() || arg[0] != '-') {
      if (have_snapshot) return std::nullopt;
      a.snapshot = arg;
      have_snapshot = true;
      continue;
    }
    struct Opt {
      const char* name;
      std::string* value;
      bool* seen;
    };
    const Opt opts[] = {{"--via", &a.socket, &have_via},
                        {"--serial", &a.serial, &have_serial},
                        {"--snapshot-on-doorbell", &a.doorbell, &have_doorbell}};
    const Opt* opt = nullptr;
    std::string value;
    for (const Opt& o : opts) {
      const size_t n = std::strlen(o.name);
      if (arg == o.name) {
        if (i + 1 >= argc) return std::nullopt;
        opt = &o;
        value = argv[++i];
      } else if (arg.compare(0, n, o.name) == 0 && arg.size() > n && arg[n] == '=') {
        opt = &o;
        value = arg.substr(n + 1);
      }
    }
    // "-" is a value (stdout, for --serial); any other leading '-' is the
    // parser's to judge.
    if (opt == nullptr || *opt->seen || value.empty() || (value[0] == '-' && value != "-")) return std::nullopt;
    *opt->value = value;
    *opt->seen = true;
  }
  if (!have_via || !have_snapshot) return std::nullopt;
  return a;
}

// Runs the whole tool in this process, with the same arguments.
[[noreturn]] void RunWholeTool(char** argv) {
  const int status = vmsnap::cli::FailureExit(argv[1] != nullptr ? argv[1] : "");
  char self[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    std::fprintf(stderr, "vmsnap: cannot find its own program (/proc/self/exe): %s\n", std::strerror(errno));
    std::_Exit(status);
  }
  std::string tool(self, size_t(n));
  tool.erase(tool.rfind('/') + 1);
  tool += VMSNAP_TOOL_PATH;
  ::execv(tool.c_str(), argv);
  std::fprintf(stderr, "vmsnap: cannot run %s: %s (it is installed with this program)\n", tool.c_str(),
               std::strerror(errno));
  std::_Exit(status);
}

}  // namespace

int main(int argc, char** argv) {
  if (auto via = PlainLoadVia(argc, argv)) {
    // As the whole tool: a closed stderr makes a note fail, not end the
    // process before it gives the guest's exit status.
    ::signal(SIGPIPE, SIG_IGN);
    return vmsnap::cli::RunLoadVia(*via);
  }
  RunWholeTool(argv);
}
