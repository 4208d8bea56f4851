// SPDX-License-Identifier: MIT
// Fuzz entry: CLI numbers (--gpa/--gva/--len, --mem) through their parsers.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tests/fuzz/parsers_entry.h"
#include "tools/forensics/cli_util.h"

namespace vmsnap::fuzz {
namespace {

void RoundTrip(uint64_t v, bool allow_suffix) {
  char dec[32], hex[32];
  std::snprintf(dec, sizeof dec, "%" PRIu64, v);
  std::snprintf(hex, sizeof hex, "0x%" PRIx64, v);
  for (const char* text : {dec, hex}) {
    auto back = forensics::ParseNumber(text, "value", allow_suffix);
    if (!back.ok() || *back != v) std::abort();
  }
}

}  // namespace

int CliNumberOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool suffix : {false, true}) {
    auto v = forensics::ParseNumber(text, "value", suffix);
    if (v.ok()) RoundTrip(*v, suffix);
    else if (v.status().message().empty()) std::abort();
  }
  auto mem = forensics::ParseMemorySize(text);
  if (mem.ok() && (*mem == 0 || *mem > (1ull << 40))) std::abort();
  return 0;
}

}  // namespace vmsnap::fuzz
