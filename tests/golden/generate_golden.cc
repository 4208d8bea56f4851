// SPDX-License-Identifier: MIT
// Regenerates the golden files: generate_golden <dir> (normally tests/golden).
// Built by CMake, never run by CI: the committed files are the compatibility
// record, and regenerating them is a deliberate act (see README.md).
#include <cstdio>
#include <string>

#include "tests/golden/golden_gen.h"

int main(int argc, char** argv) {
  const bool seeds = argc == 3 && std::string(argv[1]) == "--fuzz-seeds";
  if (argc != 2 && !seeds) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR | --fuzz-seeds CORPUS_DIR\n", argv[0]);
    return 2;
  }
  vmsnap::Status s = seeds ? vmsnap::golden::GenerateFuzzSeeds(argv[2])
                           : vmsnap::golden::GenerateAll(argv[1]);
  if (!s.ok()) {
    std::fprintf(stderr, "generate_golden: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}
