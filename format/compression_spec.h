// SPDX-License-Identifier: MIT
// How a snapshot's memory chunks are compressed, as users write it on the
// command line and in control-socket requests: "none", "zstd" or "zstd:LEVEL".
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"
#include "format/writer.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap {

struct CompressionSpec {
  schema::Compression codec = schema::Compression::ZSTD;
  int zstd_level = 3;  // used only when codec is ZSTD

  bool operator==(const CompressionSpec&) const = default;
};

// Accepts exactly "none", "zstd" (level 3) and "zstd:LEVEL", LEVEL a decimal
// integer in ZSTD_minCLevel()..ZSTD_maxCLevel() (negative levels are faster
// and compress less). zstd reads level 0 as "its default", so "zstd:0" is
// taken as zstd:3, the level that would actually be used. Anything else is a
// one-line InvalidArgument naming the accepted forms and the level range.
Result<CompressionSpec> ParseCompressionSpec(std::string_view text);

// "zstd:N" or "none": the text SaveStats.compression records, and which
// ParseCompressionSpec reads back to the same spec.
std::string ToString(const CompressionSpec& spec);

// Sets the codec and level of `options`, leaving the rest alone.
void Apply(const CompressionSpec& spec, WriterOptions& options);

// The accepted forms with this build's level range, for help texts:
// "zstd[:LEVEL] (default zstd:3; LEVEL -131072..22, negative is faster) or
// none (pages stored raw and page-aligned, mappable)".
std::string CompressionSpecHelp();

}  // namespace vmsnap
