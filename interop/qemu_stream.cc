// SPDX-License-Identifier: MIT
// QEMU migration stream reader: see qemu_stream.h.
#include "interop/qemu_stream.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <set>

#include "base/hex.h"

namespace vmsnap::interop::qemu {
namespace {

using nlohmann::json;

// Bounds-checked big-endian cursor over the stream. Every error names the
// input, the offset and the section being read.
class Cursor {
 public:
  Cursor(std::span<const uint8_t> in, const std::string& what) : in_(in), what_(what) {}
  uint64_t pos() const { return pos_; }
  uint64_t size() const { return in_.size(); }
  bool at_end() const { return pos_ >= in_.size(); }
  void set_section(std::string s) { section_ = std::move(s); }

  Status Need(uint64_t n) const {
    if (n > in_.size() - pos_) {
      return Status::Corruption(what_ + ": truncated QEMU stream in " + section_ + ": needs " +
                                std::to_string(n) + " bytes at offset " + std::to_string(pos_) +
                                ", file ends at " + std::to_string(in_.size()));
    }
    return Status::Ok();
  }
  Status Error(const std::string& m) const {
    return Status::Corruption(what_ + ": " + section_ + " at offset " + std::to_string(pos_) + ": " + m);
  }
  Status Unsupported(const std::string& m) const {
    return Status::Unsupported(what_ + ": " + section_ + " at offset " + std::to_string(pos_) + ": " + m);
  }
  Result<uint64_t> Be(unsigned bytes) {
    VMSNAP_RETURN_IF_ERROR(Need(bytes));
    uint64_t v = 0;
    for (unsigned i = 0; i < bytes; ++i) v = (v << 8) | in_[pos_ + i];
    pos_ += bytes;
    return v;
  }
  uint8_t Peek() const { return at_end() ? 0xff : in_[pos_]; }
  Result<std::span<const uint8_t>> Bytes(uint64_t n) {
    VMSNAP_RETURN_IF_ERROR(Need(n));
    auto s = in_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  // u8 length + bytes, as QEMU writes section and RAM block names.
  Result<std::string> Name() {
    VMSNAP_ASSIGN_OR_RETURN(uint64_t len, Be(1));
    VMSNAP_ASSIGN_OR_RETURN(auto b, Bytes(len));
    return std::string(b.begin(), b.end());
  }
  const std::string& what() const { return what_; }

 private:
  std::span<const uint8_t> in_;
  std::string what_;
  std::string section_ = "stream header";
  uint64_t pos_ = 0;
};

// Where the vmdesc JSON sits: QEMU ends the stream with EOF (0x00), then
// 0x06, a be32 length and that many bytes of JSON. Returns the offset of the
// 0x06 byte, or 0 when the stream does not end that way.
uint64_t FindVmdesc(std::span<const uint8_t> in) {
  if (in.size() < 14) return 0;
  uint64_t lowest = in.size() > (64u << 20) ? in.size() - (64u << 20) : 9;
  for (uint64_t p = in.size() - 5; p >= lowest; --p) {
    if (in[p] != kVmdesc || in[p - 1] != kEof) continue;
    uint64_t len = (uint64_t{in[p + 1]} << 24) | (uint64_t{in[p + 2]} << 16) | (uint64_t{in[p + 3]} << 8) | in[p + 4];
    if (p + 5 + len == in.size()) return p;
  }
  return 0;
}

bool X86Machine(const std::string& m) {
  return m == "microvm" || m == "isapc" || m == "pc" || m == "q35" || m.rfind("pc-", 0) == 0 ||
         m.rfind("xenfv", 0) == 0 || m.rfind("xenpv", 0) == 0 || m == "x-remote" || m == "none";
}

// Walks one vmstate's description: its fields in order (a struct field's
// parts recursively, once per array element), then its subsections, naming
// each leaf field relative to the section ("a.b[2].c"). Reading a stream and
// laying out a new one walk the same way and differ only at a subsection
// header and at a leaf, which `Side` supplies:
//   Status Subsection(const std::string& name, const json& vmsd);
//   Status Leaf(const std::string& name, uint64_t size, uint64_t count);
//   uint64_t pos() const;                        // bytes read or laid out
//   Status Error(const std::string& message) const;
template <typename Side>
class VmdescWalk {
 public:
  explicit VmdescWalk(Side& side) : side_(side) {}

  Status Walk(const json& vmsd, const std::string& prefix, int depth) {
    if (depth > 16) return side_.Error("vmdesc nests deeper than 16 levels");
    if (vmsd.contains("fields")) {
      for (const json& f : vmsd.at("fields")) VMSNAP_RETURN_IF_ERROR(WalkField(f, prefix, depth));
    }
    if (vmsd.contains("subsections")) {
      for (const json& s : vmsd.at("subsections")) {
        VMSNAP_RETURN_IF_ERROR(side_.Subsection(s.at("vmsd_name").get<std::string>(), s));
        VMSNAP_RETURN_IF_ERROR(Walk(s, prefix, depth + 1));
      }
    }
    return Status::Ok();
  }

 private:
  Status WalkField(const json& f, const std::string& prefix, int depth) {
    std::string name = prefix + f.at("name").get<std::string>();
    uint64_t size = f.value("size", uint64_t{0});
    uint64_t count = f.value("array_len", uint64_t{1});
    if (count > (1u << 24) || size > (1ull << 32)) {
      return side_.Error("field '" + name + "' has an absurd size in vmdesc");
    }
    const json* inner = nullptr;
    if (f.contains("struct")) inner = &f.at("struct");
    else if (f.contains("fields")) inner = &f;  // "tmp" fields describe their parts inline
    if (inner == nullptr) return side_.Leaf(name, size, count);
    for (uint64_t i = 0; i < count; ++i) {
      std::string p = count > 1 ? name + "[" + std::to_string(i) + "]." : name + ".";
      uint64_t start = side_.pos();
      VMSNAP_RETURN_IF_ERROR(Walk(*inner, p, depth + 1));
      if (size != 0 && side_.pos() - start != size && !inner->contains("subsections")) {
        return side_.Error("field '" + name + "' is " + std::to_string(side_.pos() - start) +
                           " bytes by its parts but vmdesc says " + std::to_string(size));
      }
    }
    return Status::Ok();
  }

  Side& side_;
};

// Cuts one vmstate out of the stream: checks each subsection header where
// the description puts one, and records where each leaf field's bytes are.
class StreamSide {
 public:
  StreamSide(Cursor& c, uint64_t base, DeviceSection& out) : c_(c), base_(base), out_(out) {}

  Status Subsection(const std::string& name, const json&) {
    VMSNAP_ASSIGN_OR_RETURN(uint64_t marker, c_.Be(1));
    if (marker != kSubsection) {
      return c_.Error("expected subsection '" + name + "' (0x05), found " + Hex(marker));
    }
    VMSNAP_ASSIGN_OR_RETURN(std::string got, c_.Name());
    if (got != name) return c_.Error("subsection '" + got + "' where vmdesc says '" + name + "'");
    VMSNAP_RETURN_IF_ERROR(c_.Be(4).status());  // its version
    out_.subsections.push_back(name);
    return Status::Ok();
  }
  Status Leaf(const std::string& name, uint64_t size, uint64_t count) {
    uint64_t offset = c_.pos() - base_;
    VMSNAP_RETURN_IF_ERROR(c_.Bytes(size * count).status());
    out_.fields[name] = Field{offset, size, static_cast<uint32_t>(count)};
    return Status::Ok();
  }
  uint64_t pos() const { return c_.pos(); }
  Status Error(const std::string& m) const { return c_.Error(m); }

 private:
  Cursor& c_;
  uint64_t base_;
  DeviceSection& out_;
};

struct SectionInfo {
  std::string idstr;
  uint32_t instance = 0;
  uint32_t version = 0;
};

class Parser {
 public:
  Parser(std::span<const uint8_t> in, const std::string& what) : in_(in), c_(in, what) {}

  Result<Stream> Run() {
    VMSNAP_RETURN_IF_ERROR(Header());
    VMSNAP_RETURN_IF_ERROR(Vmdesc());
    while (true) {
      c_.set_section("section list");
      uint64_t at = c_.pos();
      VMSNAP_ASSIGN_OR_RETURN(uint64_t type, c_.Be(1));
      switch (type) {
        case kEof:
          return Finish();
        case kConfiguration:
          VMSNAP_RETURN_IF_ERROR(Configuration());
          break;
        case kStart:
        case kFull:
          VMSNAP_RETURN_IF_ERROR(StartOrFull(type, at));
          break;
        case kPart:
        case kEnd:
          VMSNAP_RETURN_IF_ERROR(PartOrEnd(at));
          break;
        case kCommand:
          return c_.Unsupported("a QEMU_VM_COMMAND (postcopy or return-path migration) is not supported");
        default:
          c_.set_section("section list");
          return Status::Corruption(c_.what() + ": unknown section type " + Hex(type) + " at offset " +
                                    std::to_string(at) + " (corrupt stream)");
      }
    }
  }

 private:
  Status Header() {
    if (!LooksLikeStream(in_)) {
      return Status::InvalidArgument(c_.what() + ": not a QEMU migration stream (no \"QEVM\" magic at offset 0)");
    }
    VMSNAP_RETURN_IF_ERROR(c_.Be(4).status());
    VMSNAP_ASSIGN_OR_RETURN(uint64_t v, c_.Be(4));
    if (v != kVersion) {
      return Status::Unsupported(c_.what() + ": QEMU stream version " + std::to_string(v) +
                                 " at offset 4 is not supported (only version 3)");
    }
    out_.version = static_cast<uint32_t>(v);
    return Status::Ok();
  }

  Status Vmdesc() {
    vmdesc_at_ = FindVmdesc(in_);
    if (vmdesc_at_ == 0) return Status::Ok();  // reported at the first device section
    std::string text(reinterpret_cast<const char*>(in_.data()) + vmdesc_at_ + 5, in_.size() - vmdesc_at_ - 5);
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("devices") || !j.at("devices").is_array()) {
      return Status::Corruption(c_.what() + ": the vmdesc JSON at offset " + std::to_string(vmdesc_at_ + 5) +
                                " is malformed");
    }
    if (j.value("page_size", uint64_t{kPageSize}) != kPageSize) {
      return Status::Unsupported(c_.what() + ": the stream's page size " + std::to_string(j.value("page_size", 0)) +
                                 " is not 4096 (not an x86-64 stream)");
    }
    vmdesc_ = std::move(j);
    out_.vmdesc = std::move(text);
    return Status::Ok();
  }

  Status Configuration() {
    c_.set_section("CONFIGURATION section");
    VMSNAP_ASSIGN_OR_RETURN(uint64_t len, c_.Be(4));
    if (len > 256) return c_.Error("machine name of " + std::to_string(len) + " bytes");
    VMSNAP_ASSIGN_OR_RETURN(auto name, c_.Bytes(len));
    out_.machine.assign(name.begin(), name.end());
    if (!X86Machine(out_.machine)) {
      return Status::WrongArch(c_.what() + ": the stream is from QEMU machine '" + out_.machine +
                               "', not an x86-64 PC machine (wrong architecture)");
    }
    while (c_.Peek() == kSubsection) {
      VMSNAP_RETURN_IF_ERROR(c_.Be(1).status());
      VMSNAP_ASSIGN_OR_RETURN(std::string sub, c_.Name());
      VMSNAP_RETURN_IF_ERROR(c_.Be(4).status());
      if (sub == "configuration/target-page-bits") {
        VMSNAP_ASSIGN_OR_RETURN(uint64_t bits, c_.Be(4));
        if (bits != 12) return Status::WrongArch(c_.what() + ": target page bits " + std::to_string(bits) + " (not x86-64)");
      } else if (sub == "configuration/capabilities") {
        VMSNAP_ASSIGN_OR_RETURN(uint64_t n, c_.Be(4));
        for (uint64_t i = 0; i < n; ++i) {
          VMSNAP_ASSIGN_OR_RETURN(std::string cap, c_.Name());
          out_.capabilities.push_back(cap);
        }
      } else if (sub == "configuration/uuid") {
        VMSNAP_RETURN_IF_ERROR(c_.Bytes(16).status());
      } else {
        return c_.Unsupported("unknown configuration subsection '" + sub + "'");
      }
    }
    for (const std::string& cap : out_.capabilities) {
      if (cap == "x-ignore-shared" || cap == "postcopy-ram" || cap == "multifd" || cap == "compress" ||
          cap == "xbzrle" || cap == "mapped-ram") {
        return c_.Unsupported("streams saved with the '" + cap + "' migration capability are not supported");
      }
    }
    return Status::Ok();
  }

  Result<uint32_t> SectionHeaderFull(SectionInfo* info) {
    VMSNAP_ASSIGN_OR_RETURN(uint64_t id, c_.Be(4));
    VMSNAP_ASSIGN_OR_RETURN(info->idstr, c_.Name());
    VMSNAP_ASSIGN_OR_RETURN(uint64_t inst, c_.Be(4));
    VMSNAP_ASSIGN_OR_RETURN(uint64_t ver, c_.Be(4));
    info->instance = static_cast<uint32_t>(inst);
    info->version = static_cast<uint32_t>(ver);
    return static_cast<uint32_t>(id);
  }

  Status Footer(uint32_t id) {
    if (c_.Peek() != kFooter) return Status::Ok();  // older machine types write none
    VMSNAP_RETURN_IF_ERROR(c_.Be(1).status());
    VMSNAP_ASSIGN_OR_RETURN(uint64_t got, c_.Be(4));
    if (got != id) {
      return c_.Error("section footer names section id " + std::to_string(got) + ", expected " + std::to_string(id));
    }
    return Status::Ok();
  }

  std::string Label(const SectionInfo& s) {
    return "section '" + s.idstr + "' instance " + std::to_string(s.instance);
  }

  Status StartOrFull(uint64_t type, uint64_t at) {
    c_.set_section(std::string(type == kStart ? "START" : "FULL") + " section header");
    SectionInfo info;
    VMSNAP_ASSIGN_OR_RETURN(uint32_t id, SectionHeaderFull(&info));
    c_.set_section(Label(info) + " (section starting at offset " + std::to_string(at) + ")");
    if (ids_.count(id) && type == kFull) return c_.Error("section id " + std::to_string(id) + " used twice");
    ids_[id] = info;
    if (info.idstr == "ram") {
      if (info.version != kRamSectionVersion) {
        return c_.Unsupported("RAM section version " + std::to_string(info.version) + " is not supported (only 4)");
      }
      // START carries the block list (ending in EOS); pages follow in PART/END.
      VMSNAP_RETURN_IF_ERROR(type == kStart ? RamHeader() : RamPages());
      return Footer(id);
    }
    if (type == kStart) {
      return c_.Unsupported("iterative section '" + info.idstr + "' (block or dirty-bitmap migration) is not supported");
    }
    VMSNAP_RETURN_IF_ERROR(Device(info));
    return Footer(id);
  }

  Status PartOrEnd(uint64_t at) {
    c_.set_section("PART/END section header");
    VMSNAP_ASSIGN_OR_RETURN(uint64_t id, c_.Be(4));
    auto it = ids_.find(static_cast<uint32_t>(id));
    if (it == ids_.end()) {
      return Status::Corruption(c_.what() + ": section at offset " + std::to_string(at) + " continues section id " +
                                std::to_string(id) + ", which never started");
    }
    c_.set_section(Label(it->second) + " (part starting at offset " + std::to_string(at) + ")");
    if (it->second.idstr != "ram") return c_.Unsupported("iterative section '" + it->second.idstr + "'");
    VMSNAP_RETURN_IF_ERROR(RamPages());
    return Footer(static_cast<uint32_t>(id));
  }

  Status RamHeader() {
    VMSNAP_ASSIGN_OR_RETURN(uint64_t v, c_.Be(8));
    if (!(v & kRamMemSize)) return c_.Error("RAM section does not start with the RAM size");
    uint64_t total = v & ~(kPageSize - 1);
    uint64_t seen = 0;
    while (seen < total) {
      VMSNAP_ASSIGN_OR_RETURN(std::string name, c_.Name());
      VMSNAP_ASSIGN_OR_RETURN(uint64_t len, c_.Be(8));
      if (len > total - seen || len % kPageSize != 0) {
        return c_.Error("RAM block '" + name + "' of " + std::to_string(len) + " bytes does not fit the total " +
                        std::to_string(total));
      }
      if (len > (1ull << 40)) return c_.Unsupported("RAM block '" + name + "' larger than 1 TiB");
      if (out_.FindBlock(name)) return c_.Error("RAM block '" + name + "' listed twice");
      RamBlock b;
      b.name = name;
      if (len > 0) {
        auto map = Mapping::Anonymous(len, "RAM block '" + name + "'");
        if (!map.ok()) return c_.Error(map.status().message() + " (" + std::to_string(len) + " bytes)");
        b.data = std::move(map).value();
      }
      out_.blocks.push_back(std::move(b));
      seen += len;
    }
    VMSNAP_ASSIGN_OR_RETURN(uint64_t eos, c_.Be(8));
    if ((eos & (kPageSize - 1)) != kRamEos) return c_.Error("RAM block list does not end with EOS");
    return Status::Ok();
  }

  Status RamPages() {
    // A page flagged "continue" refers to the block of the page before it,
    // which may be in an earlier part of the section: QEMU's receiver keeps
    // that block from one part to the next, and its sender relies on it once
    // the guest is big enough to need several parts.
    RamBlock* block = last_block_ == SIZE_MAX ? nullptr : &out_.blocks[last_block_];
    while (true) {
      uint64_t at = c_.pos();
      VMSNAP_ASSIGN_OR_RETURN(uint64_t v, c_.Be(8));
      uint64_t flags = v & (kPageSize - 1);
      uint64_t addr = v & ~(kPageSize - 1);
      if (flags & kRamEos) return Status::Ok();
      if (flags & (kRamCompressPage | kRamXbzrle | kRamMultifdFlush | kRamHook)) {
        const char* what = (flags & kRamCompressPage) ? "a compressed page ('compress' capability)"
                           : (flags & kRamXbzrle)     ? "an XBZRLE page ('xbzrle' capability)"
                           : (flags & kRamMultifdFlush) ? "a multifd flush ('multifd' capability)"
                                                        : "an RDMA hook";
        return c_.Unsupported(std::string("RAM record at offset ") + std::to_string(at) + " is " + what +
                              ", which is not supported");
      }
      if (!(flags & kRamContinue)) {
        VMSNAP_ASSIGN_OR_RETURN(std::string name, c_.Name());
        block = nullptr;
        for (size_t i = 0; i < out_.blocks.size(); ++i) {
          if (out_.blocks[i].name == name) {
            block = &out_.blocks[i];
            last_block_ = i;
          }
        }
        if (!block) return c_.Error("page of RAM block '" + name + "', which the RAM section did not list");
      }
      if (!block) return c_.Error("RAM record at offset " + std::to_string(at) + " continues no block");
      if (addr >= block->data.size()) {
        return c_.Error("page " + Hex(addr) + " lies outside RAM block '" + block->name + "' (" +
                        std::to_string(block->data.size()) + " bytes)");
      }
      uint8_t* page = block->data.data() + addr;
      if ((flags & ~kRamContinue) == kRamZero) {
        VMSNAP_ASSIGN_OR_RETURN(uint64_t fill, c_.Be(1));
        std::memset(page, static_cast<int>(fill), kPageSize);
      } else if ((flags & ~kRamContinue) == kRamPage) {
        VMSNAP_ASSIGN_OR_RETURN(auto bytes, c_.Bytes(kPageSize));
        std::memcpy(page, bytes.data(), kPageSize);
      } else {
        return c_.Unsupported("RAM record at offset " + std::to_string(at) + " has unknown flags " + Hex(flags));
      }
      block->pages_sent++;
    }
  }

  Status Device(const SectionInfo& info) {
    if (vmdesc_.is_null()) {
      return Status::InvalidArgument(
          c_.what() + ": " + Label(info) + " at offset " + std::to_string(c_.pos()) +
          ": the stream has no vmdesc JSON at its end, so its device sections cannot be cut: it was either "
          "truncated (the file ends at " + std::to_string(in_.size()) +
          ") or saved with suppress-vmdesc=on (save it again with suppress-vmdesc=off)");
    }
    const json* desc = nullptr;
    const json& devices = vmdesc_.at("devices");
    for (size_t i = 0; i < devices.size(); ++i) {
      const json& d = devices[i];
      if (used_.count(i)) continue;
      if (d.value("name", std::string()) == info.idstr && d.value("instance_id", uint64_t{0}) == info.instance) {
        desc = &d;
        used_.insert(i);
        break;
      }
    }
    if (!desc) return c_.Error("no vmdesc entry describes this section");
    if (desc->value("version", uint64_t{0}) != info.version) {
      return c_.Error("vmdesc says version " + std::to_string(desc->value("version", 0)) + ", the section " +
                      std::to_string(info.version));
    }
    DeviceSection s;
    s.idstr = info.idstr;
    s.instance = info.instance;
    s.version = info.version;
    s.stream_offset = c_.pos();
    StreamSide side(c_, s.stream_offset, s);
    VMSNAP_RETURN_IF_ERROR(VmdescWalk<StreamSide>(side).Walk(*desc, "", 0));
    s.data.assign(in_.begin() + static_cast<ptrdiff_t>(s.stream_offset), in_.begin() + static_cast<ptrdiff_t>(c_.pos()));
    out_.sections.push_back(std::move(s));
    return Status::Ok();
  }

  Result<Stream> Finish() {
    if (vmdesc_at_ == 0 && c_.pos() < in_.size()) {
      c_.set_section("stream end");
      return c_.Error("bytes after the end of the stream are not a vmdesc");
    }
    if (vmdesc_at_ != 0 && c_.pos() != vmdesc_at_) {
      c_.set_section("stream end");
      return c_.Error("the stream ends before its vmdesc at offset " + std::to_string(vmdesc_at_));
    }
    if (out_.machine.empty()) {
      return Status::Corruption(c_.what() + ": the stream has no CONFIGURATION section (QEMU writes one first)");
    }
    if (!out_.Find("cpu")) {
      return Status::WrongArch(c_.what() + ": the stream has no x86 'cpu' section (wrong architecture?)");
    }
    return std::move(out_);
  }

  std::span<const uint8_t> in_;
  Cursor c_;
  Stream out_;
  json vmdesc_;
  uint64_t vmdesc_at_ = 0;
  std::map<uint32_t, SectionInfo> ids_;
  std::set<size_t> used_;
  size_t last_block_ = SIZE_MAX;  // index in out_.blocks of the last RAM page's block
};

// Lays out one vmstate on an empty section, zero-filled: subsection headers
// where a reader expects them, and each leaf field's place recorded.
class LayoutSide {
 public:
  explicit LayoutSide(DeviceSection& out) : out_(out) {}

  Status Subsection(const std::string& name, const json& vmsd) {
    if (name.size() > 255) return Error("subsection name '" + name.substr(0, 32) + "...' is longer than 255 bytes");
    out_.data.push_back(kSubsection);
    out_.data.push_back(static_cast<uint8_t>(name.size()));
    out_.data.insert(out_.data.end(), name.begin(), name.end());
    uint32_t v = vmsd.value("version", uint32_t{1});
    for (int i = 3; i >= 0; --i) out_.data.push_back(static_cast<uint8_t>(v >> (8 * i)));
    out_.subsections.push_back(name);
    return Status::Ok();
  }
  Status Leaf(const std::string& name, uint64_t size, uint64_t count) {
    // The section is built in memory: bound it, as a reader is bounded by
    // the stream it reads.
    // (Added, not subtracted: subsection headers are not bounded, so the
    // section may already be past the bound; size * count is at most 2^56.)
    if (out_.data.size() + size * count > kMaxSection) {
      return Error("field '" + name + "' would make the section larger than " + std::to_string(kMaxSection >> 20) +
                   " MiB");
    }
    // A name seen twice (QEMU flattens some arrays' first element twice)
    // keeps its first place, as the reader's last one is not mapped.
    out_.fields.emplace(name, Field{out_.data.size(), size, static_cast<uint32_t>(count)});
    out_.data.resize(out_.data.size() + size * count, 0);
    return Status::Ok();
  }
  uint64_t pos() const { return out_.data.size(); }
  Status Error(const std::string& m) const {
    return Status::Corruption("vmdesc of section '" + out_.idstr + "': " + m);
  }

 private:
  static constexpr uint64_t kMaxSection = 64ull << 20;
  DeviceSection& out_;
};

class StreamWriter {
 public:
  explicit StreamWriter(const StreamSink& out) : out_(out) {}
  void U8(uint8_t v) { buf_.push_back(v); }
  void Be(uint64_t v, unsigned bytes) {
    for (unsigned i = bytes; i-- > 0;) buf_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void Name(const std::string& s) {
    U8(static_cast<uint8_t>(s.size()));
    Bytes(s.data(), s.size());
  }
  void Bytes(const void* p, size_t n) {
    auto b = static_cast<const uint8_t*>(p);
    buf_.insert(buf_.end(), b, b + n);
  }
  Status Flush(bool force = false) {
    if (buf_.empty() || (!force && buf_.size() < (1u << 20))) return Status::Ok();
    Status s = out_(buf_.data(), buf_.size());
    buf_.clear();
    return s;
  }

 private:
  const StreamSink& out_;
  std::vector<uint8_t> buf_;
};

}  // namespace

Result<std::vector<std::pair<std::string, uint32_t>>> DescribedSections(std::string_view vmdesc) {
  json j = json::parse(vmdesc, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("devices") || !j.at("devices").is_array()) {
    return Status::Corruption("the QEMU device description (vmdesc) is not a JSON object with \"devices\"");
  }
  std::vector<std::pair<std::string, uint32_t>> out;
  try {
    for (const json& d : j.at("devices")) out.emplace_back(d.at("name").get<std::string>(), d.value("instance_id", uint32_t{0}));
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("the QEMU device description is malformed: ") + e.what());
  }
  return out;
}

Result<Layout> LayoutSections(std::string_view vmdesc, const std::vector<SectionPick>& picks) {
  json j = json::parse(vmdesc, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("devices") || !j.at("devices").is_array()) {
    return Status::Corruption("the QEMU device description (vmdesc) is not a JSON object with \"devices\"");
  }
  Layout out;
  json devices = json::array();
  try {
    for (const SectionPick& p : picks) {
      const json* desc = nullptr;
      for (const json& d : j.at("devices")) {
        if (d.value("name", std::string()) == p.idstr && d.value("instance_id", uint32_t{0}) == p.from_instance) {
          desc = &d;
          break;
        }
      }
      if (!desc) {
        return Status::NotFound("the QEMU device description has no section '" + p.idstr + "' instance " +
                                std::to_string(p.from_instance));
      }
      DeviceSection s;
      s.idstr = p.idstr;
      s.instance = p.instance;
      s.version = desc->value("version", uint32_t{0});
      LayoutSide side(s);
      VMSNAP_RETURN_IF_ERROR(VmdescWalk<LayoutSide>(side).Walk(*desc, "", 0));
      json d = *desc;
      d["instance_id"] = p.instance;
      devices.push_back(std::move(d));
      out.sections.push_back(std::move(s));
    }
  } catch (const std::exception& e) {
    return Status::Corruption(std::string("the QEMU device description is malformed: ") + e.what());
  }
  json whole = {{"page_size", kPageSize}, {"devices", std::move(devices)}};
  out.vmdesc = whole.dump();
  return out;
}

Status WriteStream(const std::string& machine, const std::vector<RamSource>& ram,
                   const std::vector<DeviceSection>& sections, const std::string& vmdesc, const StreamSink& out) {
  StreamWriter w(out);
  w.Be(kMagic, 4);
  w.Be(kVersion, 4);
  // QEMU 7.2 refuses a stream without it, and compares the machine name.
  w.U8(kConfiguration);
  w.Be(machine.size(), 4);
  w.Bytes(machine.data(), machine.size());

  // Ids from 1: QEMU's loader matches a PART/END section to the first
  // handler whose load id equals it, and handlers not loaded yet hold 0.
  uint32_t id = 1;
  auto header = [&w](uint8_t type, uint32_t section_id, const std::string& idstr, uint32_t instance, uint32_t version) {
    w.U8(type);
    w.Be(section_id, 4);
    w.Name(idstr);
    w.Be(instance, 4);
    w.Be(version, 4);
  };
  auto footer = [&w](uint32_t section_id) {
    w.U8(kFooter);
    w.Be(section_id, 4);
  };

  // RAM: the block list, then every page.
  uint32_t ram_id = id++;
  header(kStart, ram_id, "ram", 0, kRamSectionVersion);
  uint64_t total = 0;
  for (const RamSource& b : ram) total += b.size;
  w.Be(total | kRamMemSize, 8);
  for (const RamSource& b : ram) {
    w.Name(b.name);
    w.Be(b.size, 8);
  }
  w.Be(kRamEos, 8);
  footer(ram_id);
  w.U8(kEnd);
  w.Be(ram_id, 4);
  std::vector<uint8_t> piece;
  for (const RamSource& b : ram) {
    bool first = true;
    for (uint64_t off = 0; off < b.size;) {
      uint64_t len = std::min<uint64_t>(b.size - off, 1u << 20);
      piece.resize(len);
      VMSNAP_RETURN_IF_ERROR(b.read(off, len, piece.data()));
      for (uint64_t p = 0; p < len; p += kPageSize) {
        const uint8_t* page = piece.data() + p;
        bool zero = std::all_of(page, page + kPageSize, [](uint8_t c) { return c == 0; });
        w.Be((off + p) | (zero ? kRamZero : kRamPage) | (first ? 0 : kRamContinue), 8);
        if (first) w.Name(b.name);
        first = false;
        if (zero) w.U8(0);
        else w.Bytes(page, kPageSize);
      }
      off += len;
      VMSNAP_RETURN_IF_ERROR(w.Flush());
    }
  }
  w.Be(kRamEos, 8);
  footer(ram_id);

  for (const DeviceSection& s : sections) {
    uint32_t sid = id++;
    header(kFull, sid, s.idstr, s.instance, s.version);
    w.Bytes(s.data.data(), s.data.size());
    footer(sid);
    VMSNAP_RETURN_IF_ERROR(w.Flush());
  }
  w.U8(kEof);
  // The description QEMU appends, which QEMU's own loader skips and
  // `vmsnap import qemu` needs.
  w.U8(kVmdesc);
  w.Be(vmdesc.size(), 4);
  w.Bytes(vmdesc.data(), vmdesc.size());
  return w.Flush(true);
}

bool DeviceSection::Set(std::string_view name, uint64_t value, uint32_t index) {
  auto it = fields.find(std::string(name));
  if (it == fields.end() || index >= it->second.count || it->second.size > 8) return false;
  uint64_t off = it->second.offset + uint64_t{index} * it->second.size;
  for (uint64_t i = it->second.size; i-- > 0;) {
    data[off + i] = static_cast<uint8_t>(value);
    value >>= 8;
  }
  return true;
}

bool DeviceSection::HasSubsection(std::string_view name) const {
  return std::find(subsections.begin(), subsections.end(), name) != subsections.end();
}

uint64_t DeviceSection::U(std::string_view name, uint32_t index) const {
  auto it = fields.find(std::string(name));
  if (it == fields.end() || index >= it->second.count || it->second.size > 8) return 0;
  uint64_t off = it->second.offset + uint64_t{index} * it->second.size;
  uint64_t v = 0;
  for (uint64_t i = 0; i < it->second.size; ++i) v = (v << 8) | data[off + i];
  return v;
}

const DeviceSection* Stream::Find(std::string_view idstr, uint32_t instance) const {
  for (const auto& s : sections) {
    if (s.idstr == idstr && s.instance == instance) return &s;
  }
  return nullptr;
}

const RamBlock* Stream::FindBlock(std::string_view name) const {
  for (const auto& b : blocks) {
    if (b.name == name) return &b;
  }
  return nullptr;
}

bool LooksLikeStream(std::span<const uint8_t> in) {
  return in.size() >= 4 && in[0] == 'Q' && in[1] == 'E' && in[2] == 'V' && in[3] == 'M';
}

Result<Stream> ParseStream(std::span<const uint8_t> in, const std::string& what) {
  try {
    Parser p(in, what);
    return p.Run();
  } catch (const std::exception& e) {
    // nlohmann's type errors on a vmdesc of the wrong shape.
    return Status::Corruption(what + ": the vmdesc JSON does not describe the stream: " + e.what());
  }
}

}  // namespace vmsnap::interop::qemu
