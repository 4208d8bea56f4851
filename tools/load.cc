// vmsnap load: restores a snapshot into a new VM in this process and runs it.
#include <cstdio>
#include <string>

#include "tools/command.h"

#if defined(VMSNAP_HAVE_X86_KVM)
#include "tools/vmm_options.h"
#include "vmm/vmm.h"

namespace vmsnap::cli {

void RegisterLoad(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand("load", "Restore a snapshot into a new VM and continue running it");
  struct Args {
    std::string snapshot;
    VmmFlags vmm;
    std::string memory = "eager";
  };
  auto args = std::make_shared<Args>();
  sub->add_option("SNAPSHOT", args->snapshot, "snapshot file (.vmsnap)")->required();
  AddVmmFlags(sub, args->vmm);
  sub->add_option("--memory", args->memory, "eager: copy memory in before running (default); lazy: falls back "
                                            "to eager for now")
      ->check(CLI::IsMember({"eager", "lazy"}));
  sub->callback([args, exit_code] {
    auto fail = [exit_code](const std::string& msg) {
      std::fprintf(stderr, "vmsnap load: %s\n", msg.c_str());
      *exit_code = kExitVmmFailed;
    };
    if (args->memory == "lazy") {
      std::fprintf(stderr, "vmsnap load: --memory lazy is not supported yet; loading memory eagerly\n");
    }
    auto options = ToVmmOptions(args->vmm);
    if (!options.ok()) return fail(options.status().message());
    auto machine = vmm::Vmm::Restore(args->snapshot, *options);
    if (!machine.ok()) return fail(machine.status().message());
    auto status = (*machine)->Run();
    if (!status.ok()) return fail(status.status().message());
    *exit_code = *status & 0xff;
  });
}

}  // namespace vmsnap::cli

#else  // no x86-64 KVM in this build (portable cross builds)

namespace vmsnap::cli {

void RegisterLoad(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand("load", "(needs an x86-64 host with KVM)");
  sub->allow_extras();
  sub->callback([exit_code] {
    std::fprintf(stderr, "vmsnap load: this build has no x86-64 KVM support\n");
    *exit_code = kExitVmmFailed;
  });
}

}  // namespace vmsnap::cli

#endif
