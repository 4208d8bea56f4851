// SPDX-License-Identifier: MIT
// The memory map `inspect --memory-map` prints: every page of every region in
// one range of pages this file stores, records as zero, or leaves undefined.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "format/memory.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::tools {

// Per region: {slot, name, start, end, size, ranges: [{start, end, state,
// pages, bytes}]} with every page of the region in exactly one range (end
// exclusive). Pages no chunk covers are "absent".
nlohmann::ordered_json MemoryMapJson(schema::Manifest::Reader m);

}  // namespace vmsnap::tools
