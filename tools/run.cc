// SPDX-License-Identifier: MIT
// vmsnap run: boots a guest image in the built-in VMM (docs/guest-abi.md).
#include <cstdio>
#include <string>

#include "tools/command.h"

#include "tools/vmm_options.h"
#include "vmm/vmm.h"

namespace vmsnap::cli {

void RegisterRun(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand("run", "Boot a guest image in the built-in VMM and run it until it exits");
  struct Args {
    std::string image;
    std::string mem = "64M";
    std::string mem_file;
    int vcpus = 1;
    VmmFlags vmm;
  };
  auto args = std::make_shared<Args>();
  sub->add_option("GUEST", args->image, "guest image: ELF64 x86-64 executable or flat binary")->required();
  auto* mem = sub->add_option("--mem", args->mem, "guest RAM size, with optional K/M/G suffix (default 64M)");
  sub->add_option("--mem-file", args->mem_file, "back guest RAM with this existing file, mapped shared")
      ->excludes(mem);
  sub->add_option("--vcpus", args->vcpus, "number of vCPUs (default 1)");
  AddVmmFlags(sub, args->vmm);
  sub->callback([args, exit_code] {
    auto fail = [exit_code](const std::string& msg) {
      std::fprintf(stderr, "vmsnap run: %s\n", msg.c_str());
      *exit_code = kExitVmmFailed;
    };
    auto size = ParseSize(args->mem);
    if (!size.ok()) return fail(size.status().message());
    vmm::BootConfig boot;
    boot.image = args->image;
    boot.mem_size = *size;
    boot.mem_file = args->mem_file;
    boot.vcpus = args->vcpus;
    auto options = ToVmmOptions(args->vmm);
    if (!options.ok()) return fail(options.status().message());
    auto machine = vmm::Vmm::Boot(boot, *options);
    if (!machine.ok()) return fail(machine.status().message());
    auto status = (*machine)->Run();
    if (!status.ok()) return fail(status.status().message());
    *exit_code = *status & 0xff;
  });
}

}  // namespace vmsnap::cli
