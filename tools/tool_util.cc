// SPDX-License-Identifier: MIT
// Shared helpers of the offline subcommands.
#include "tools/tool_util.h"

#include <cstdio>

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

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string ResolveParentPath(const std::string& child_path, const std::string& recorded) {
  if (!recorded.empty() && recorded[0] == '/') return recorded;
  return DirOf(child_path) + "/" + recorded;
}

std::vector<std::string> ChainPaths(const SnapshotChain& chain) {
  std::vector<std::string> paths;
  for (auto it = chain.layers().rbegin(); it != chain.layers().rend(); ++it) paths.push_back((*it)->path());
  return paths;
}

}  // namespace vmsnap::tools
