// Regenerates the golden files: generate_golden <dir> (normally tests/golden).
// Built by CMake, never run by CI: the committed files are the compatibility
// record, and regenerating them is a deliberate act (see README.md).
#include <cstdio>

#include "tests/golden/golden_gen.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  vmsnap::Status s = vmsnap::golden::GenerateAll(argv[1]);
  if (!s.ok()) {
    std::fprintf(stderr, "generate_golden: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}
