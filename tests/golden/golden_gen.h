// SPDX-License-Identifier: MIT
// Writes the golden .vmsnap files (good and known-bad) into a directory.
// Deterministic: fixed times, host strings and pseudo-random content, so
// running it again gives the same bytes (with the same zstd version).
#pragma once

#include <string>

#include "base/status.h"

namespace vmsnap::golden {

// File names, also listed in tests/golden/README.md.
inline constexpr const char* kX86 = "x86_64.vmsnap";
inline constexpr const char* kX86Child = "x86_64-child.vmsnap";
inline constexpr const char* kS390 = "s390x.vmsnap";
inline constexpr const char* kPpc = "ppc64.vmsnap";
inline constexpr const char* kArm64 = "aarch64.vmsnap";  // format 1.1
inline constexpr const char* kNewerMinor = "newer-minor.vmsnap";
inline constexpr const char* kBadMagic = "bad-magic.vmsnap";
inline constexpr const char* kNewerMajor = "newer-major.vmsnap";
inline constexpr const char* kTruncated = "truncated.vmsnap";
inline constexpr const char* kBadManifestChecksum = "bad-manifest-checksum.vmsnap";
inline constexpr const char* kBadChunkChecksum = "bad-chunk-checksum.vmsnap";
inline constexpr const char* kMissingParent = "missing-parent.vmsnap";

inline constexpr const char* kAllFiles[] = {kX86,      kX86Child,   kS390,       kPpc,       kArm64,
                                            kNewerMinor, kBadMagic, kNewerMajor, kTruncated,
                                            kBadManifestChecksum, kBadChunkChecksum,
                                            kMissingParent};

Status GenerateAll(const std::string& dir);

// Small valid files for the fuzzer's seed corpus (tests/fuzz/corpus).
Status GenerateFuzzSeeds(const std::string& dir);

}  // namespace vmsnap::golden
