// vmsnap diff: placeholder until its issue lands.
#include <cstdio>

#include "tools/command.h"

namespace vmsnap::cli {

void RegisterDiff(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand("diff", "(not implemented yet)");
  sub->allow_extras();
  sub->callback([exit_code] {
    std::fprintf(stderr, "vmsnap diff: not implemented yet\n");
    *exit_code = kExitError;
  });
}

}  // namespace vmsnap::cli
