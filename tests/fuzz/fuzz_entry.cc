// Body of the reader fuzz target (see fuzz_entry.h).
#include "tests/fuzz/fuzz_entry.h"

#include <capnp/dynamic.h>

#include <cstdlib>
#include <vector>

#include "format/memory.h"
#include "format/reader.h"

namespace vmsnap::fuzz {

int ReaderOneInput(const uint8_t* data, size_t size) {
  auto r = SnapshotReader::OpenBuffer({data, size}, "fuzz");
  if (!r.ok()) {
    // Every rejection must say why.
    if (r.status().message().empty()) std::abort();
    return 0;
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
  // VerifyAll and the chunk-by-chunk reads must agree.
  if (all.ok() == any_bad) std::abort();
  (void)ComputeManifestStats(reader);
  // What inspect does: every field, through reflection. Open() promised the
  // message is sound, so this must not throw.
  kj::String text = kj::str(capnp::toDynamic(reader.manifest()));
  (void)text;
  return 0;
}

}  // namespace vmsnap::fuzz
