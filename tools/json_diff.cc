// SPDX-License-Identifier: MIT
// Leaf-by-leaf JSON model comparison.
#include "tools/json_diff.h"

#include <set>

namespace vmsnap::tools {

const char* const kMetadataPaths[] = {
    "id",           "format_version",       "parent",          "created",
    "save",         "memory.present_pages", "memory.zero_pages", "memory.absent_pages",
    "memory.stored_bytes", "memory.raw_bytes", "memory.chunks",  "loads", nullptr};

namespace {

constexpr char kDecodedSuffix[] = "_decoded";

class Differ {
 public:
  Differ(const JsonDiffOptions& o, std::vector<Difference>* out) : o_(o), out_(out) {
    if (!o_.include_metadata) {
      for (const char* const* p = kMetadataPaths; *p; ++p) skip_.insert(*p);
    }
  }

  void Node(const Json& a, const Json& b, const std::string& path) {
    if (Skipped(path)) return;
    if (a.is_object() && b.is_object()) return Object(a, b, path);
    if (a.is_array() && b.is_array()) {
      size_t n = std::max(a.size(), b.size());
      for (size_t i = 0; i < n; i++) {
        static const Json kNull;
        Node(i < a.size() ? a[i] : kNull, i < b.size() ? b[i] : kNull, path + "[" + std::to_string(i) + "]");
      }
      return;
    }
    if (a != b) out_->push_back({path, a, b});
  }

 private:
  static std::string Join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  bool Skipped(const std::string& path) const {
    if (skip_.count(path)) return true;
    if (!o_.ignore_volatile) return false;
    return (o_.volatile_a && o_.volatile_a->paths.count(path)) ||
           (o_.volatile_b && o_.volatile_b->paths.count(path));
  }

  void Object(const Json& a, const Json& b, const std::string& path) {
    std::vector<std::string> keys;
    std::set<std::string> seen;
    for (auto it = a.begin(); it != a.end(); ++it) {
      if (seen.insert(it.key()).second) keys.push_back(it.key());
    }
    for (auto it = b.begin(); it != b.end(); ++it) {
      if (seen.insert(it.key()).second) keys.push_back(it.key());
    }
    static const Json kNull;
    for (const std::string& k : keys) {
      const Json& va = a.contains(k) ? a[k] : kNull;
      const Json& vb = b.contains(k) ? b[k] : kNull;
      std::string p = Join(path, k);
      std::string decoded = k + kDecodedSuffix;
      if (k.size() > sizeof kDecodedSuffix - 1 &&
          k.compare(k.size() - (sizeof kDecodedSuffix - 1), std::string::npos, kDecodedSuffix) == 0 &&
          seen.count(k.substr(0, k.size() - (sizeof kDecodedSuffix - 1)))) {
        continue;  // compared with its raw blob below
      }
      if (seen.count(decoded)) {
        // A raw blob: compare its decoded view first (at its own position)
        // and fall back to the raw bytes only when that shows nothing.
        std::vector<Difference> sub;
        Differ inner(o_, &sub);
        inner.Node(a.contains(decoded) ? a[decoded] : kNull, b.contains(decoded) ? b[decoded] : kNull,
                   Join(path, decoded));
        if (sub.empty() && !Skipped(p) && RawDiffers(va, vb, p)) out_->push_back({p, va, vb});
        out_->insert(out_->end(), sub.begin(), sub.end());
        continue;
      }
      Node(va, vb, p);
    }
  }

  // Raw hex blobs, with volatile byte ranges masked when asked.
  bool RawDiffers(const Json& a, const Json& b, const std::string& path) const {
    if (a == b) return false;
    if (!o_.ignore_volatile || !a.is_string() || !b.is_string()) return true;
    const std::string& sa = a.get_ref<const std::string&>();
    const std::string& sb = b.get_ref<const std::string&>();
    if (sa.size() != sb.size()) return true;
    std::vector<std::pair<size_t, size_t>> masks;
    for (const VolatileSet* v : {o_.volatile_a, o_.volatile_b}) {
      if (!v) continue;
      auto it = v->blob_masks.find(path);
      if (it != v->blob_masks.end()) masks.insert(masks.end(), it->second.begin(), it->second.end());
    }
    for (size_t i = 0; i < sa.size(); i++) {
      if (sa[i] == sb[i]) continue;
      size_t byte = i / 2;
      bool masked = false;
      for (auto [off, len] : masks) masked |= byte >= off && byte < off + len;
      if (!masked) return true;
    }
    return false;
  }

  const JsonDiffOptions& o_;
  std::vector<Difference>* out_;
  std::set<std::string> skip_;
};

}  // namespace

namespace {

// Two ids that decode to the same name (a name the decoder does not know
// falls back to the hex id, which is unique) keep apart by their id.
std::string UniqueKey(const Json& obj, const std::string& name, const Json& id) {
  if (!obj.contains(name)) return name;
  return name + "(" + (id.is_string() ? id.get<std::string>() : id.dump()) + ")";
}

}  // namespace

namespace {

// A list of {KEY, FIELD...} entries as an object keyed by each entry's KEY
// (its name when it has one), so two snapshots compare register by register
// whatever the order of their lists.
void KeyListBy(Json& parent, const char* list, const char* key) {
  if (!parent.is_object() || !parent.contains(list) || !parent[list].is_array()) return;
  Json keyed = Json::object();
  for (const Json& e : parent[list]) {
    if (!e.is_object() || !e.contains(key)) continue;
    Json rest = e;
    rest.erase(key);
    std::string name = e.contains("name") && e["name"].is_string() ? e["name"].get<std::string>() : "";
    rest.erase("name");
    const Json& k = e[key];
    if (name.empty()) name = std::string(key) + " " + (k.is_string() ? k.get<std::string>() : k.dump());
    Json value = rest.size() == 1 ? rest.begin().value() : rest;
    keyed[UniqueKey(keyed, name, k)] = std::move(value);
  }
  parent[list] = std::move(keyed);
}

}  // namespace

void KeyArm64RegistersByName(Json& snapshot) {
  if (!snapshot.is_object() || !snapshot.contains("arch") || snapshot["arch"] != "aarch64") return;
  if (!snapshot.contains("vcpus") || !snapshot["vcpus"].is_array()) return;
  for (Json& vcpu : snapshot["vcpus"]) {
    if (!vcpu.is_object()) continue;
    // {id, value|data, name} entries: the value by name.
    for (const char* key : {"sysregs", "firmware", "other_regs"}) {
      if (!vcpu.contains(key) || !vcpu[key].is_array()) continue;
      Json keyed = Json::object();
      for (const Json& r : vcpu[key]) {
        if (!r.is_object() || !r.contains("id")) continue;
        const std::string name = r.contains("name") && r["name"].is_string() ? r["name"].get<std::string>()
                                                                               : r["id"].dump();
        const char* field = r.contains("value") ? "value" : "data";
        keyed[UniqueKey(keyed, name, r["id"])] = r.contains(field) ? r[field] : Json();
      }
      vcpu[key] = std::move(keyed);
    }
    if (vcpu.contains("reg_list") && vcpu["reg_list"].is_array() && vcpu.contains("reg_list_decoded") &&
        vcpu["reg_list_decoded"].is_array() && vcpu["reg_list_decoded"].size() == vcpu["reg_list"].size()) {
      Json keyed = Json::object();
      for (size_t i = 0; i < vcpu["reg_list"].size(); ++i) {
        const Json& name = vcpu["reg_list_decoded"][i];
        const Json& id = vcpu["reg_list"][i];
        keyed[UniqueKey(keyed, name.is_string() ? name.get<std::string>() : id.dump(), id)] = id;
      }
      vcpu["reg_list"] = std::move(keyed);
      vcpu.erase("reg_list_decoded");
    }
  }
  // The vGIC's and the ITS's register lists: by offset, ICC_* name and
  // first INTID, like the vCPUs' registers.
  if (!snapshot.contains("vm") || !snapshot["vm"].is_object()) return;
  Json& vm = snapshot["vm"];
  if (vm.contains("gic") && vm["gic"].is_object()) {
    Json& gic = vm["gic"];
    KeyListBy(gic, "dist", "offset");
    if (gic.contains("cpus") && gic["cpus"].is_array()) {
      for (Json& cpu : gic["cpus"]) {
        KeyListBy(cpu, "redist", "offset");
        KeyListBy(cpu, "sysregs", "id");
        KeyListBy(cpu, "levels", "intid");
      }
    }
  }
  if (vm.contains("its") && vm["its"].is_object()) KeyListBy(vm["its"], "regs", "offset");
}

std::vector<Difference> DiffJson(const Json& a, const Json& b, const JsonDiffOptions& options) {
  std::vector<Difference> out;
  Differ(options, &out).Node(a, b, "");
  return out;
}

}  // namespace vmsnap::tools
