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
  int zstd_level = 3;  // used only when codec is ZSTD; with `adaptive`, the highest level used
  // "auto": each chunk's codec (raw or a zstd level) chosen while saving
  // (WriterOptions::adaptive).
  bool adaptive = false;

  bool operator==(const CompressionSpec&) const = default;
};

// The spec of `save`, `run`/`load` doorbell snapshots and `flatten` when
// none is given: "auto".
CompressionSpec DefaultSaveCompression();

// Accepts exactly "auto", "none", "zstd" (level 3) and "zstd:LEVEL", LEVEL a decimal
// integer in ZSTD_minCLevel()..ZSTD_maxCLevel() (negative levels are faster
// and compress less). zstd reads level 0 as "its default", so "zstd:0" is
// taken as zstd:3, the level that would actually be used. Anything else is a
// one-line InvalidArgument naming the accepted forms and the level range.
Result<CompressionSpec> ParseCompressionSpec(std::string_view text);

// "auto", "zstd:N" or "none": the text SaveStats.compression records, and which
// ParseCompressionSpec reads back to the same spec.
std::string ToString(const CompressionSpec& spec);

// Sets the codec and level of `options`, leaving the rest alone.
void Apply(const CompressionSpec& spec, WriterOptions& options);

// The text SaveStats.compression records for a writer configured so.
std::string CompressionText(const WriterOptions& options);

// The accepted forms with this build's level range, for help texts.
std::string CompressionSpecHelp();

}  // namespace vmsnap
