// SPDX-License-Identifier: MIT
// The human-readable rendering of a snapshot's JSON model (tools/state_json.h)
// for `vmsnap inspect`: an aligned report, raw blobs replaced by their decoded
// views, long lists cut short with a pointer to --json.
#pragma once

#include <string>

#include "tools/state_json.h"

namespace vmsnap::tools {

// The report for a document from ManifestToJson, plus the optional keys inspect
// adds: "file" {path, size}, "chain" (array of layers) and "memory_map".
std::string RenderReport(const Json& doc);

// A JSON value as one short line: strings unquoted, long strings summarised.
std::string ShortValue(const Json& v, size_t max_len = 80);

}  // namespace vmsnap::tools
