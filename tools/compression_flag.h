// SPDX-License-Identifier: MIT
// The --compress SPEC option that save, flatten, run and load share: one help
// text and one check, so a bad SPEC is a usage error (one line, the
// subcommand's usage exit status) before anything is started or contacted.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "format/compression_spec.h"

namespace vmsnap::cli {

// Adds --compress to `sub`, stored as text in `spec` (left empty when the
// option is absent); `what` says which snapshots it applies to.
inline CLI::Option* AddCompressFlag(CLI::App* sub, std::string& spec, const std::string& what) {
  CLI::Validator check(
      [](std::string& text) -> std::string {
        auto s = ParseCompressionSpec(text);
        return s.ok() ? std::string() : s.status().message();
      },
      "");
  return sub->add_option("--compress", spec, what + ": " + CompressionSpecHelp())->type_name("SPEC")->check(check);
}

}  // namespace vmsnap::cli
