// SPDX-License-Identifier: MIT
// The JSON model of a snapshot that inspect, diff and the other offline tools
// share: the manifest walked by Cap'n Proto reflection (every field of every
// architecture, snake_case keys), plus decoded views of architectural blobs
// and summary figures. Its keys are stable (scripts read them); see ManifestToJson.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/arch.h"
#include "base/hex.h"
#include "format/reader.h"
#include "base/status.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::tools {

using Json = nlohmann::ordered_json;

// As Hex, with a leading '-' for negative values.
std::string HexSigned(int64_t v);
// apicBase -> apic_base, timeUnixNs -> time_unix_ns.
std::string SnakeCase(std::string_view camel);

// KVM_MP_STATE_* name without the prefix ("RUNNABLE"), or "UNKNOWN(<n>)".
std::string MpStateName(uint32_t state);
// Short name of a well-known x86 MSR ("EFER", "LSTAR"), or "" when unknown.
std::string_view MsrName(uint32_t index);

// MSRs whose value moves with time even while the VM is paused, so a capture,
// restore and second capture of the same VM legitimately differ in them.
// `diff --ignore-volatile` skips them; docs/state-coverage.md refers to this list.
struct VolatileMsr {
  uint32_t index;
  const char* name;
  const char* why;
};
std::span<const VolatileMsr> VolatileMsrs();

// Where in the JSON model the time-dependent state is: the paths (as diff
// names them) of fields annotated $Common.volatile, of volatile MSRs and of
// decoded volatile registers; and, per raw blob path, the byte ranges of the
// blob that hold such registers (the LAPIC timer current count).
struct VolatileSet {
  std::set<std::string> paths;
  std::map<std::string, std::vector<std::pair<size_t, size_t>>> blob_masks;
};

// What the manifest does not itself say about the snapshot file.
struct SnapshotFacts {
  std::string id;           // snapshot id, hex
  uint16_t format_major = 0;  // from the file header
  uint16_t format_minor = 0;
};

// The JSON document `inspect --json` prints for one snapshot file:
//   format_version "MAJOR.MINOR", arch, id, parent (null or {id, path, depth}),
//   created, save, vcpus (each: id, then the fields of its architecture's
//   struct flattened in: mp_state as a name, regs, sregs, ..., msrs as an
//   object from "0x<index>" to value; Data fields as hex, with "<field>_decoded"
//   beside those the schema marks $Common.decoded), vm (the architecture's VM
//   struct, flattened; s390x adds cmma_decoded and skeys_decoded, ppc64 adds
//   the decoded fields to each HPTE), devices, memory {size, page_size,
//   regions, present_pages, zero_pages, absent_pages, stored_bytes, chunks}.
// Integers are "0x" hex strings unless the field is annotated $Common.decimal.
// A malformed message gives a Corruption status, never an exception.
// `vol`, when given, receives the volatile paths of this document.
Result<Json> ManifestToJson(schema::Manifest::Reader manifest, const SnapshotFacts& facts,
                            VolatileSet* vol = nullptr);

// ManifestToJson for an opened file.
Result<Json> SnapshotToJson(const SnapshotReader& reader, VolatileSet* vol = nullptr);

}  // namespace vmsnap::tools
