// vmsnap run: placeholder until its issue lands.
#include <cstdio>

#include "tools/command.h"

namespace vmsnap::cli {

void RegisterRun(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand("run", "(not implemented yet)");
  sub->allow_extras();
  sub->callback([exit_code] {
    std::fprintf(stderr, "vmsnap run: not implemented yet\n");
    *exit_code = kExitError;
  });
}

}  // namespace vmsnap::cli
