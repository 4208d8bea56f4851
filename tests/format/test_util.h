// SPDX-License-Identifier: MIT
// Helpers shared by the format tests and the golden-file generator: temporary
// directories, whole-file I/O, and surgery on .vmsnap bytes (rewriting the
// header or the manifest with valid checksums, to reach deeper checks).
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "format/layout.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::testing {

using Bytes = std::vector<uint8_t>;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/vmsnap-test-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    if (d == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = d;
  }
  ~TempDir() { (void)std::system(("rm -rf '" + path_ + "'").c_str()); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  // Names of the entries in the directory, sorted.
  std::set<std::string> List() const {
    std::set<std::string> out;
    if (DIR* d = ::opendir(path_.c_str())) {
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        if (n != "." && n != "..") out.insert(n);
      }
      ::closedir(d);
    }
    return out;
  }

 private:
  std::string path_;
};

inline Bytes ReadFileBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

inline void WriteFileBytes(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}

inline bool FileExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// Rewrites header fields and recomputes the header checksum.
inline void SetHeaderVersion(Bytes& file, uint16_t major, uint16_t minor) {
  layout::PutLe16(file.data() + layout::kHeaderMajorOffset, major);
  layout::PutLe16(file.data() + layout::kHeaderMinorOffset, minor);
  layout::PutLe64(file.data() + layout::kHeaderChecksumOffset,
                  layout::Checksum(file.data(), layout::kHeaderChecksumOffset));
}

struct Sections {
  uint64_t manifest_offset = 0;
  uint64_t manifest_length = 0;
  uint64_t footer_offset = 0;
};

inline Sections FindSections(const Bytes& file) {
  Sections s;
  s.footer_offset = file.size() - layout::kFooterSize;
  s.manifest_offset = layout::GetLe64(file.data() + s.footer_offset + layout::kFooterManifestOffset);
  s.manifest_length = layout::GetLe64(file.data() + s.footer_offset + layout::kFooterManifestLength);
  return s;
}

// Decodes the manifest of a well-formed file, lets `edit` change it, and
// writes it back with a fresh manifest checksum and footer, so the file passes
// every checksum and only the reader's structural checks can catch the edit.
inline Bytes RewriteManifest(const Bytes& file,
                             const std::function<void(schema::Manifest::Builder)>& edit) {
  Sections s = FindSections(file);
  auto words = kj::heapArray<capnp::word>(s.manifest_length / 8);
  std::memcpy(words.begin(), file.data() + s.manifest_offset, s.manifest_length);
  capnp::FlatArrayMessageReader in(words.asPtr());
  capnp::MallocMessageBuilder out;
  out.setRoot(in.getRoot<schema::Manifest>());
  edit(out.getRoot<schema::Manifest>());
  auto flat = capnp::messageToFlatArray(out);
  auto bytes = flat.asBytes();
  Bytes result(file.begin(), file.begin() + long(s.manifest_offset));
  result.insert(result.end(), bytes.begin(), bytes.end());
  layout::Footer f;
  f.manifest_offset = s.manifest_offset;
  f.manifest_length = bytes.size();
  f.manifest_checksum = layout::Checksum(bytes.begin(), bytes.size());
  uint8_t foot[layout::kFooterSize];
  layout::EncodeFooter(f, foot);
  result.insert(result.end(), foot, foot + sizeof foot);
  return result;
}

// Deterministic pseudo-random bytes (xorshift), so files built from them are
// reproducible.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed ? seed : 0x9e3779b97f4a7c15ull) {}
  uint64_t Next() {
    s_ ^= s_ << 13;
    s_ ^= s_ >> 7;
    s_ ^= s_ << 17;
    return s_;
  }
  void Fill(uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      if (i % 8 == 0) cur_ = Next();
      p[i] = uint8_t(cur_ >> (8 * (i % 8)));
    }
  }

 private:
  uint64_t s_;
  uint64_t cur_ = 0;
};

}  // namespace vmsnap::testing
