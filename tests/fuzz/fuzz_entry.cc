// SPDX-License-Identifier: MIT
// Body of the reader fuzz target (see fuzz_entry.h).
#include "tests/fuzz/fuzz_entry.h"

#include <capnp/dynamic.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "format/layout.h"
#include "format/memory.h"
#include "format/reader.h"

namespace vmsnap::fuzz {

namespace {

void CheckOne(const uint8_t* data, size_t size) {
  auto r = SnapshotReader::OpenBuffer({data, size}, "fuzz");
  if (!r.ok()) {
    // Every rejection must say why.
    if (r.status().message().empty()) std::abort();
    return;
  }
  const SnapshotReader& reader = **r;
  Status all = reader.VerifyAll();
  bool any_bad = false;
  std::vector<uint8_t> buf;
  const auto& idx = reader.chunk_index();
  for (size_t i = 0; i < idx.size(); ++i) {
    const uint64_t span = uint64_t(idx[i].page_count) * reader.page_size();
    if (buf.size() < span) buf.resize(span);
    Status s = reader.ReadChunk(i, buf.data());
    if (!s.ok()) {
      if (s.message().empty()) std::abort();
      any_bad = true;
    }
    (void)reader.StoredBytes(i);
  }
  // VerifyAll and the chunk-by-chunk reads must agree, except that VerifyAll
  // also fails on bytes between the chunks that the layout does not explain.
  if (all.ok() && any_bad) std::abort();
  if (!all.ok() && !any_bad) {
    const std::string& m = all.message();
    if (m.find("padding") == std::string::npos && m.find("not accounted for") == std::string::npos &&
        m.find("overlaps the bytes before it") == std::string::npos) {
      std::abort();
    }
  }
  (void)ComputeMemoryStats(reader.manifest());
  // What inspect does: every field, through reflection. Open() promised the
  // message is sound, so this must not throw.
  kj::String text = kj::str(capnp::toDynamic(reader.manifest()));
  (void)text;
}

// Random mutations almost never keep a checksum valid, so on its own the
// fuzzer would only ever test the checksum checks. A second pass rewrites
// the header, footer and manifest checksums (and magics) of a copy so that
// mutations reach the version, bounds, Cap'n Proto and chunk-index checks.
std::vector<uint8_t> Repaired(const uint8_t* data, size_t size) {
  std::vector<uint8_t> b(data, data + size);
  uint8_t* p = b.data();
  std::memcpy(p, layout::kHeaderMagic, 8);
  layout::PutLe64(p + layout::kHeaderChecksumOffset, layout::Checksum(p, layout::kHeaderChecksumOffset));
  uint8_t* f = p + size - layout::kFooterSize;
  std::memcpy(f + layout::kFooterMagicOffset, layout::kFooterMagic, 8);
  const uint64_t off = layout::GetLe64(f + layout::kFooterManifestOffset);
  const uint64_t len = layout::GetLe64(f + layout::kFooterManifestLength);
  const uint64_t footer_at = size - layout::kFooterSize;
  if (off <= footer_at && len <= footer_at - off) {
    layout::PutLe64(f + layout::kFooterManifestChecksum, layout::Checksum(p + off, len));
  }
  layout::PutLe64(f + layout::kFooterChecksumOffset, layout::Checksum(f, layout::kFooterChecksumOffset));
  return b;
}

}  // namespace

int ReaderOneInput(const uint8_t* data, size_t size) {
  CheckOne(data, size);
  if (size >= layout::kHeaderSize + layout::kFooterSize) {
    std::vector<uint8_t> fixed = Repaired(data, size);
    CheckOne(fixed.data(), fixed.size());
  }
  return 0;
}

}  // namespace vmsnap::fuzz
