// SPDX-License-Identifier: MIT
// Shared helpers of the offline subcommands.
#include "tools/tool_util.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "base/cache_dir.h"
#include "store/pull.h"
#include "store/store_url.h"
#include "tools/progress.h"

namespace vmsnap::tools {

int Fail(std::string_view command, const std::string& file, const Status& status, int exit_code) {
  std::string msg = status.message();
  if (msg.empty()) msg = std::string(CodeName(status.code()));
  // One line, always: a message from a decoder could carry a newline.
  for (char& c : msg) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  if (file.empty() || msg.find(file) != std::string::npos) {
    std::fprintf(stderr, "vmsnap %.*s: %s\n", int(command.size()), command.data(), msg.c_str());
  } else {
    std::fprintf(stderr, "vmsnap %.*s: %s: %s\n", int(command.size()), command.data(), file.c_str(),
                 msg.c_str());
  }
  return exit_code;
}

std::vector<std::string> ChainPaths(const SnapshotChain& chain) {
  std::vector<std::string> paths;
  for (auto it = chain.layers().rbegin(); it != chain.layers().rend(); ++it) paths.push_back((*it)->path());
  return paths;
}

int ResolveSnapshotArg(std::string& arg, std::string_view command, int exit_code) {
  if (!store::LooksLikeStoreUrl(arg)) return 0;
#ifdef VMSNAP_HAVE_STORE
  auto url = store::ParseStoreUrl(arg, /*name_required=*/true);
  if (!url.ok()) return Fail(command, "", url.status(), exit_code);
  auto cache = UserCacheDir("store/" + url->pool);
  if (!cache.ok()) return Fail(command, "", cache.status(), exit_code);
  const std::string dir = *cache;
  auto st = store::OpenStore(*url, "");
  if (!st.ok()) return Fail(command, "", st.status(), exit_code);
  ProgressBar bar("fetching", 0);
  auto path = store::PullCached(**st, url->name, dir, [&](uint64_t done, uint64_t total) {
    bar.SetTotal(total);
    bar.Update(done);
  });
  bar.Finish();
  if (!path.ok()) return Fail(command, "", path.status(), exit_code);
  arg = *path;
  return 0;
#else
  return Fail(command, "", Status::Unsupported(arg + ": this vmsnap was built without the chunk store (librados)"),
              exit_code);
#endif
}

}  // namespace vmsnap::tools
