// SPDX-License-Identifier: MIT
// Running shell commands (the vmsnap binary, readelf, gdb) from the forensics
// tests, with stdout and stderr captured through files in a scratch dir.
// Not tied to KVM: the file-based tests run on every host, cross builds too.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace vmsnap::forensics_test {

struct RunResult {
  int exit = -1;
  std::string out;
  std::string err;
};

inline std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Runs `cmd` with /bin/sh; its output goes through DIR/stdout and DIR/stderr.
inline RunResult Shell(const std::string& dir, const std::string& cmd) {
  const std::string out = dir + "/stdout", err = dir + "/stderr";
  const std::string full = cmd + " >" + out + " 2>" + err;
  const int rc = std::system(full.c_str());
  RunResult r;
  r.exit = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = Slurp(out);
  r.err = Slurp(err);
  return r;
}

}  // namespace vmsnap::forensics_test
