// SPDX-License-Identifier: MIT
// Parsing of the CLI's addresses, lengths and sizes (declared in cli_util.h);
// a file of its own so the fuzz target builds it alone.
#include <string>

#include "tools/forensics/cli_util.h"

namespace vmsnap::forensics {

Result<uint64_t> ParseNumber(std::string_view text, std::string_view what, bool allow_suffix) {
  auto bad = [&] {
    return Status::InvalidArgument("bad " + std::string(what) + " '" + std::string(text) + "'" +
                                   (allow_suffix ? " (expected a number, 0x-hex, with optional K/M/G)"
                                                 : " (expected a number or 0x-hex)"));
  };
  std::string_view s = text;
  uint64_t mult = 1;
  if (allow_suffix && !s.empty()) {
    const char c = s.back();
    if (c == 'k' || c == 'K') mult = 1ull << 10;
    if (c == 'm' || c == 'M') mult = 1ull << 20;
    if (c == 'g' || c == 'G') mult = 1ull << 30;
    if (mult != 1) s.remove_suffix(1);
  }
  unsigned base = 10;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s.remove_prefix(2);
  }
  if (s.empty()) return bad();
  uint64_t v = 0;
  for (char c : s) {
    if (c == '_' && base == 16) continue;  // 0xffff_8000_0000_0000
    unsigned d;
    if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
    else if (base == 16 && c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
    else if (base == 16 && c >= 'A' && c <= 'F') d = static_cast<unsigned>(c - 'A' + 10);
    else return bad();
    if (v > (~0ull - d) / base) return bad();
    v = v * base + d;
  }
  if (v > ~0ull / mult) return bad();
  return v * mult;
}

Result<uint64_t> ParseMemorySize(std::string_view text) {
  if (text.empty()) return Status::InvalidArgument("empty size");
  VMSNAP_ASSIGN_OR_RETURN(uint64_t v, ParseNumber(text, "size", /*allow_suffix=*/true));
  if (v == 0 || v > (1ull << 40)) {
    return Status::InvalidArgument("size '" + std::string(text) + "' out of range (1 byte to 1 TiB)");
  }
  return v;
}

}  // namespace vmsnap::forensics
