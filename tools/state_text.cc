// SPDX-License-Identifier: MIT
// Human-readable snapshot report.
#include "tools/state_text.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "tools/progress.h"

namespace vmsnap::tools {
namespace {

constexpr size_t kLineWidth = 100;
constexpr size_t kMaxListed = 32;   // array elements shown before "... N more"
constexpr char kDecodedSuffix[] = "_decoded";

bool IsScalar(const Json& v) { return !v.is_object() && !v.is_array(); }

bool IsScalarArray(const Json& v) {
  if (!v.is_array()) return false;
  return std::all_of(v.begin(), v.end(), [](const Json& e) { return IsScalar(e); });
}

bool IsFlatObject(const Json& v) {
  if (!v.is_object()) return false;
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!IsScalar(it.value()) && !IsScalarArray(it.value())) return false;
  }
  return true;
}

std::string Inline(const Json& v) {
  if (v.is_array()) {
    std::string s = "[";
    size_t n = 0;
    for (const Json& e : v) {
      if (n) s += " ";
      if (n == 16) {
        s += "... " + std::to_string(v.size() - n) + " more";
        break;
      }
      s += ShortValue(e, 40);
      n++;
    }
    return s + "]";
  }
  return ShortValue(v);
}

class Renderer {
 public:
  std::string str() const { return out_.str(); }

  void Line(size_t indent, const std::string& s) { out_ << std::string(indent, ' ') << s << "\n"; }

  // key/value pairs in aligned columns, as many per line as fit.
  void Grid(size_t indent, const std::vector<std::pair<std::string, std::string>>& kv) {
    if (kv.empty()) return;
    size_t kw = 0, vw = 0;
    for (auto& [k, v] : kv) {
      kw = std::max(kw, k.size());
      vw = std::max(vw, v.size());
    }
    size_t cell = kw + 1 + vw + 3;
    size_t per_line = std::max<size_t>(1, (kLineWidth - indent) / cell);
    if (vw > 40) per_line = 1;
    std::string line;
    for (size_t i = 0; i < kv.size(); i++) {
      std::string c = kv[i].first + std::string(kw - kv[i].first.size() + 1, ' ') + kv[i].second;
      bool last_in_line = (i + 1) % per_line == 0 || i + 1 == kv.size();
      if (!last_in_line) c += std::string(cell - c.size(), ' ');
      line += c;
      if (last_in_line) {
        Line(indent, line);
        line.clear();
      }
    }
  }

  void Object(const Json& o, size_t indent) {
    std::vector<std::pair<std::string, std::string>> scalars;
    auto flush = [&] {
      Grid(indent, scalars);
      scalars.clear();
    };
    for (auto it = o.begin(); it != o.end(); ++it) {
      const std::string& k = it.key();
      const Json& v = it.value();
      // Raw blob with a decoded view: show the view under the blob's name.
      if (o.contains(k + kDecodedSuffix)) continue;
      std::string name = k;
      if (name.size() > sizeof kDecodedSuffix - 1 &&
          name.compare(name.size() - (sizeof kDecodedSuffix - 1), std::string::npos, kDecodedSuffix) == 0) {
        name.resize(name.size() - (sizeof kDecodedSuffix - 1));
      }
      if (IsScalar(v) || (IsScalarArray(v) && v.size() <= 8)) {
        // Wide values (XMM/YMM registers) get lines of their own; the rest
        // keep sharing lines, so a group is cut where the width class changes.
        std::string text = Inline(v);
        if (!scalars.empty() && (scalars.back().second.size() > 40) != (text.size() > 40)) flush();
        scalars.emplace_back(name, std::move(text));
        continue;
      }
      flush();
      if (k == "msrs" && v.is_object()) {
        Msrs(v, indent);
      } else if (v.is_object()) {
        Line(indent, name + ":");
        Object(v, indent + 2);
      } else if (IsScalarArray(v)) {
        Line(indent, name + ": " + Inline(v));
      } else {
        Array(name, v, indent);
      }
    }
    flush();
  }

  void Array(const std::string& name, const Json& a, size_t indent) {
    if (a.empty()) {
      Line(indent, name + ": none");
      return;
    }
    Line(indent, name + ": " + std::to_string(a.size()) + (a.size() == 1 ? " entry" : " entries"));
    size_t shown = 0;
    for (const Json& e : a) {
      if (shown == kMaxListed) {
        Line(indent + 2, "... " + std::to_string(a.size() - shown) + " more (see --json)");
        break;
      }
      std::string tag = "[" + std::to_string(shown) + "]";
      if (IsFlatObject(e)) {
        std::string s = tag;
        for (auto it = e.begin(); it != e.end(); ++it) {
          if (e.contains(it.key() + kDecodedSuffix)) continue;
          s += " " + it.key() + "=" + Inline(it.value());
        }
        Line(indent + 2, s);
      } else if (e.is_object()) {
        Line(indent + 2, tag);
        Object(e, indent + 4);
      } else {
        Line(indent + 2, tag + " " + Inline(e));
      }
      shown++;
    }
  }

  void Msrs(const Json& msrs, size_t indent) {
    Line(indent, "msrs: " + std::to_string(msrs.size()));
    for (auto it = msrs.begin(); it != msrs.end(); ++it) {
      uint32_t index = static_cast<uint32_t>(std::stoull(it.key(), nullptr, 16));
      std::string name(MsrName(index));
      char buf[160];
      std::snprintf(buf, sizeof buf, "%-12s %-22s %s", it.key().c_str(), name.c_str(),
                    ShortValue(it.value()).c_str());
      Line(indent + 2, buf);
    }
  }

 private:
  std::ostringstream out_;
};

std::string Str(const Json& doc, const char* key) {
  if (!doc.contains(key)) return "";
  return ShortValue(doc[key]);
}

}  // namespace

std::string ShortValue(const Json& v, size_t max_len) {
  if (v.is_null()) return "-";
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (s.size() <= max_len) return s;
    bool hex = s.find_first_not_of("0123456789abcdef") == std::string::npos;
    if (hex) return "<" + std::to_string(s.size() / 2) + " bytes>";
    return s.substr(0, max_len - 3) + "...";
  }
  return v.dump();
}

std::string RenderReport(const Json& doc) {
  Renderer r;
  std::vector<std::pair<std::string, std::string>> head;
  if (doc.contains("file")) {
    head.emplace_back("snapshot", Str(doc["file"], "path") + " (" +
                                      HumanBytes(doc["file"].value("size", uint64_t{0})) + ")");
  }
  head.emplace_back("id", Str(doc, "id"));
  head.emplace_back("format", Str(doc, "format_version"));
  head.emplace_back("arch", Str(doc, "arch"));
  if (doc.contains("created")) {
    const Json& c = doc["created"];
    head.emplace_back("created", Str(c, "time") + "  by " + Str(c, "tool_version") + " on " +
                                     Str(c, "host_name") + ", kernel " + Str(c, "host_kernel"));
    head.emplace_back("host cpu", Str(c, "host_cpu"));
  }
  if (doc.contains("save")) {
    const Json& s = doc["save"];
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s, %s round(s), paused %.3f ms, took %.3f ms, compression %s",
                  s.value("live", false) ? "live" : "stopped", Str(s, "rounds").c_str(),
                  s.value("pause_ns", uint64_t{0}) / 1e6, s.value("duration_ns", uint64_t{0}) / 1e6,
                  Str(s, "compression").c_str());
    head.emplace_back("saved", buf);
  }
  if (doc.contains("loads")) {
    // The lineage: how the VM this snapshot holds was started, oldest first.
    for (const Json& l : doc["loads"]) {
      head.emplace_back(l["snapshot_id"].is_null() ? "booted" : "loaded",
                        Str(l, "time") + "  generation " + Str(l, "generation_id") +
                            (l["snapshot_id"].is_null() ? "" : "  from " + Str(l, "snapshot_id")) +
                            (l.value("warm", false) ? "  (warm)" : ""));
    }
  }
  if (doc["parent"].is_object()) {
    const Json& p = doc["parent"];
    head.emplace_back("parent", Str(p, "path") + " (id " + Str(p, "id") + ", depth " + Str(p, "depth") + ")");
  } else {
    head.emplace_back("parent", "none (full snapshot)");
  }
  for (auto& [k, v] : head) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%-10s ", k.c_str());
    r.Line(0, buf + v);
  }
  if (doc.contains("chain")) {
    r.Line(0, "chain      (root first)");
    for (const Json& l : doc["chain"]) {
      std::string state = l.value("found", false) ? (l.value("matches", false) ? "found, id matches"
                                                                                : "found, ID DOES NOT MATCH")
                                                  : "MISSING";
      if (l.contains("error")) state += ": " + ShortValue(l["error"], 200);
      r.Line(2, "[" + Str(l, "depth") + "] " + Str(l, "path") + "  id " + Str(l, "id") + "  " + state);
    }
  }
  const Json& m = doc["memory"];
  r.Line(0, "");
  r.Line(0, "memory     " + HumanBytes(m.value("size", uint64_t{0})) + " in " +
                std::to_string(m["regions"].size()) + " region(s), page size " + Str(m, "page_size"));
  std::string pages = "present " + Str(m, "present_pages") + " pages, zero " + Str(m, "zero_pages") + " pages";
  if (doc["parent"].is_object()) pages += ", inherited from parent " + Str(m, "absent_pages") + " pages";
  r.Line(11, pages);
  r.Line(11, "stored " + HumanBytes(m.value("stored_bytes", uint64_t{0})) + " in " + Str(m, "chunks") +
                 " chunk(s) (" + HumanBytes(m.value("raw_bytes", uint64_t{0})) + " uncompressed)");
  for (const Json& reg : m["regions"]) {
    uint64_t start = std::stoull(reg.value("guest_phys_addr", std::string("0")), nullptr, 16);
    uint64_t size = reg.value("size", uint64_t{0});
    char buf[200];
    std::snprintf(buf, sizeof buf, "region slot %-4s 0x%012llx-0x%012llx  %10s  flags %s  %s",
                  Str(reg, "slot").c_str(), static_cast<unsigned long long>(start),
                  static_cast<unsigned long long>(start + size), HumanBytes(size).c_str(),
                  Str(reg, "flags").c_str(), Str(reg, "name").c_str());
    r.Line(2, buf);
  }
  if (doc.contains("memory_map")) {
    r.Line(0, "");
    r.Line(0, "memory map (end exclusive; absent: not in this file -- zero in a full snapshot, the parent's in an incremental one)");
    for (const Json& reg : doc["memory_map"]) {
      r.Line(2, "region slot " + Str(reg, "slot") + " " + Str(reg, "name") + "  " + Str(reg, "start") + "-" +
                    Str(reg, "end"));
      for (const Json& rg : reg["ranges"]) {
        char buf[200];
        std::snprintf(buf, sizeof buf, "%-18s %-18s %-8s %10s pages  %s", Str(rg, "start").c_str(),
                      Str(rg, "end").c_str(), Str(rg, "state").c_str(), Str(rg, "pages").c_str(),
                      HumanBytes(rg.value("bytes", uint64_t{0})).c_str());
        r.Line(4, buf);
      }
    }
  }
  for (const Json& v : doc["vcpus"]) {
    r.Line(0, "");
    r.Line(0, "vCPU " + Str(v, "id") + "  " + Str(v, "mp_state"));
    Json rest = v;
    rest.erase("id");
    rest.erase("mp_state");
    r.Object(rest, 2);
  }
  r.Line(0, "");
  if (doc["vm"].empty()) {
    r.Line(0, "VM state: none");
  } else {
    r.Line(0, "VM state");
    r.Object(doc["vm"], 2);
  }
  r.Line(0, "");
  if (doc["devices"].empty()) {
    r.Line(0, "devices: none");
  } else {
    r.Line(0, "devices");
    for (const Json& d : doc["devices"]) {
      r.Line(2, Str(d, "name") + " version " + Str(d, "version") + ", " +
                    std::to_string(d.value("data", std::string()).size() / 2) + " bytes");
    }
  }
  return r.str();
}

}  // namespace vmsnap::tools
