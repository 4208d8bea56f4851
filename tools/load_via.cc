// SPDX-License-Identifier: MIT
// See load_via.h.
#include "tools/load_via.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/fd.h"
#include "store/store_url.h"  // LooksLikeStoreUrl (inline): also where the store is not built
#include "tools/exit_status.h"
#include "vmm/load_via.h"

namespace vmsnap::cli {

int RunLoadVia(const LoadViaArgs& args) {
  auto fail = [](const std::string& msg) {
    std::fprintf(stderr, "vmsnap load: %s\n", msg.c_str());
    return kExitVmmFailed;
  };
  // The warm VM's process writes doorbell snapshots: relative to here.
  // (getcwd, not std::filesystem: that would bring the C++ locales into
  // the front, and its start-up with them.)
  std::string doorbell = args.doorbell;
  if (!doorbell.empty() && doorbell[0] != '/') {
    char* cwd = ::getcwd(nullptr, 0);
    if (cwd == nullptr) return fail(args.doorbell + ": cannot find the current directory: " + std::strerror(errno));
    doorbell = std::string(cwd) + "/" + doorbell;
    std::free(cwd);
  }
  // A store URL goes as it is: the warm VM's process fetches it.
  std::string path = args.snapshot;
  if (!store::LooksLikeStoreUrl(path)) {
    char* abs = ::realpath(args.snapshot.c_str(), nullptr);
    if (abs == nullptr) return fail("cannot open snapshot " + args.snapshot + ": " + std::strerror(errno));
    path = abs;
    std::free(abs);
  }
  UniqueFd serial;
  if (args.serial != "-" && !args.serial.empty()) {
    serial.Reset(::open(args.serial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!serial.valid()) return fail("cannot open serial output " + args.serial + ": " + std::strerror(errno));
  }
  std::fflush(stdout);
  auto st = vmm::LoadVia(args.socket, path, serial.valid() ? serial.get() : STDOUT_FILENO, STDERR_FILENO,
                         [](const std::string& note) { std::fprintf(stderr, "vmsnap load: %s\n", note.c_str()); },
                         doorbell);
  if (!st.ok()) return fail(st.status().message());
  return *st & 0xff;
}

}  // namespace vmsnap::cli
