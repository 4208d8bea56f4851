// SPDX-License-Identifier: MIT
// Parsing and printing of compression specs: see compression_spec.h.
#include "format/compression_spec.h"

#include <zstd.h>

#include <charconv>

namespace vmsnap {
namespace {

std::string LevelRange() { return std::to_string(ZSTD_minCLevel()) + ".." + std::to_string(ZSTD_maxCLevel()); }

Status Bad(std::string_view text, std::string_view why) {
  return Status::InvalidArgument("bad compression '" + std::string(text) + "' (" + std::string(why) +
                                 "): use auto, none, zstd or zstd:LEVEL with LEVEL an integer in " + LevelRange());
}

// The highest level auto climbs to, when the output is so slow that the
// cores have time for it: past 9, zstd gains little on memory for a lot of CPU.
constexpr int kAutoCeiling = 9;

}  // namespace

CompressionSpec DefaultSaveCompression() {
  CompressionSpec spec;
  spec.adaptive = true;
  spec.zstd_level = kAutoCeiling;
  return spec;
}

Result<CompressionSpec> ParseCompressionSpec(std::string_view text) {
  CompressionSpec spec;
  if (text == "auto") return DefaultSaveCompression();
  if (text == "none") {
    spec.codec = schema::Compression::NONE;
    return spec;
  }
  if (text == "zstd") return spec;
  constexpr std::string_view kPrefix = "zstd:";
  if (text.substr(0, kPrefix.size()) != kPrefix) return Bad(text, "unknown codec");
  std::string_view level = text.substr(kPrefix.size());
  // from_chars takes an optional '-' and digits only: no '+', no spaces, no
  // hex, which is the strictness wanted here.
  int v = 0;
  auto [end, ec] = std::from_chars(level.data(), level.data() + level.size(), v);
  if (level.empty() || ec == std::errc::invalid_argument || end != level.data() + level.size()) {
    return Bad(text, "level is not an integer");
  }
  if (ec == std::errc::result_out_of_range || v < ZSTD_minCLevel() || v > ZSTD_maxCLevel()) {
    return Bad(text, "level out of range");
  }
  spec.zstd_level = v == 0 ? ZSTD_CLEVEL_DEFAULT : v;
  return spec;
}

std::string ToString(const CompressionSpec& spec) {
  if (spec.codec == schema::Compression::NONE) return "none";
  if (spec.adaptive) return "auto";
  return "zstd:" + std::to_string(spec.zstd_level);
}

std::string CompressionText(const WriterOptions& options) {
  return ToString(CompressionSpec{options.compression, options.zstd_level,
                                  options.adaptive && options.compression == schema::Compression::ZSTD});
}

void Apply(const CompressionSpec& spec, WriterOptions& options) {
  options.compression = spec.codec;
  options.zstd_level = spec.zstd_level;
  options.adaptive = spec.adaptive && spec.codec == schema::Compression::ZSTD;
}

std::string CompressionSpecHelp() {
  return "auto (the default: each 1 MiB chunk stored raw or compressed with zstd at a level chosen while "
         "saving, so that neither the disk nor the cores wait), zstd[:LEVEL] (every chunk at one level, "
         "default 3; LEVEL " +
         LevelRange() + ", negative is faster) or none (pages stored raw and page-aligned, mappable)";
}

}  // namespace vmsnap
