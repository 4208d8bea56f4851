// SPDX-License-Identifier: MIT
// vmsnap inspect: everything a snapshot file holds, as a report or as JSON.
#include <cstdio>
#include <memory>
#include <string>

#include "format/layout.h"
#include "format/reader.h"
#include "tools/command.h"
#include "tools/memory_map.h"
#include "tools/state_json.h"
#include "tools/state_text.h"
#include "tools/tool_util.h"

namespace vmsnap::cli {
namespace {

using tools::Json;

struct InspectOptions {
  std::string path;
  bool json = false;
  bool memory_map = false;
};

// The parents of `leaf`, nearest first, each with whether it was found and
// whether its id is the one its child recorded. Unlike SnapshotChain::Open,
// this reports a broken chain instead of failing: inspect shows what is there.
Json ChainJson(const SnapshotReader& leaf) {
  Json chain = Json::array();
  Json self = Json::object();
  self["depth"] = leaf.manifest().hasParent() ? leaf.manifest().getParent().getDepth() : 0;
  self["path"] = leaf.path();
  self["id"] = layout::IdToHex(leaf.id());
  self["found"] = true;
  self["matches"] = true;
  chain.push_back(self);
  std::unique_ptr<SnapshotReader> holder;
  const SnapshotReader* child = &leaf;
  for (uint32_t n = 0; child->manifest().hasParent() && n <= layout::kMaxParentDepth; n++) {
    auto ref = child->manifest().getParent();
    auto idb = ref.getSnapshotId();
    std::string want = BytesHex(std::span<const uint8_t>(idb.begin(), idb.size()));
    Json l = Json::object();
    l["depth"] = ref.getDepth() > 0 ? ref.getDepth() - 1 : 0;
    std::string path = ParentPathOf(child->path(), ref.getPath().cStr());
    l["path"] = path;
    l["id"] = want;
    auto parent = SnapshotReader::Open(path);
    if (!parent.ok()) {
      l["found"] = false;
      l["matches"] = false;
      l["error"] = parent.status().message();
      chain.insert(chain.begin(), l);
      break;
    }
    std::string got = layout::IdToHex(parent.value()->id());
    l["found"] = true;
    l["matches"] = got == want;
    if (got != want) {
      l["error"] = "file has id " + got;
      chain.insert(chain.begin(), l);
      break;
    }
    chain.insert(chain.begin(), l);
    holder = std::move(parent).value();
    child = holder.get();
  }
  return chain;
}

int RunInspect(const InspectOptions& o) {
  auto reader = SnapshotReader::Open(o.path);
  if (!reader.ok()) return tools::Fail("inspect", o.path, reader.status(), kExitError);
  const SnapshotReader& r = *reader.value();
  auto doc = tools::SnapshotToJson(r);
  if (!doc.ok()) return tools::Fail("inspect", o.path, doc.status(), kExitError);
  Json& j = doc.value();
  try {
    Json file = Json::object();
    file["path"] = o.path;
    file["size"] = r.file_size();
    j["file"] = std::move(file);
    if (r.manifest().hasParent()) j["chain"] = ChainJson(r);
    if (o.memory_map) j["memory_map"] = tools::MemoryMapJson(r.manifest());
    std::string out = o.json ? j.dump(2) + "\n" : tools::RenderReport(j);
    std::fwrite(out.data(), 1, out.size(), stdout);
  } catch (const std::exception& e) {
    // Only a manifest that slipped past the reader's checks could get here.
    return tools::Fail("inspect", o.path, Status::Corruption(std::string("manifest: ") + e.what()),
                       kExitError);
  }
  if (std::fflush(stdout) != 0) {
    return tools::Fail("inspect", "", Status::Io("writing to standard output failed"), kExitError);
  }
  return kExitOk;
}

}  // namespace

void RegisterInspect(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<InspectOptions>();
  CLI::App* sub = app.add_subcommand(
      "inspect",
      "Show everything a snapshot holds: header, parent chain, vCPU registers (with the XSAVE "
      "area and local APIC page decoded into named registers), MSRs by name, events, VM and "
      "device state, and a memory summary. Works offline, on any host.");
  sub->add_option("SNAPSHOT", o->path, "Snapshot file (.vmsnap), rados://POOL/NAME or s3://BUCKET/PREFIX/NAME (fetched into the local cache)")->required();
  sub->add_flag("--json", o->json,
                "Print one JSON object instead of the report (keys: format_version, arch, id, "
                "parent, created, save, vcpus, vm, devices, memory, file, and chain for an "
                "incremental snapshot). Integers are \"0x\" hex strings except counts and sizes.");
  sub->add_flag("--memory-map", o->memory_map,
                "Also list, per memory region, the ranges of pages that are present (stored), "
                "zero, or absent (not in this file: zero in a full snapshot, inherited from the "
                "parent in an incremental one); ranges are [start, end), end exclusive.");
  sub->footer(
      "Exit status: 0 success, 2 unreadable or corrupt snapshot.\n"
      "For an incremental snapshot the report lists its parents, each with whether it was found "
      "and whether its content id matches the one recorded.");
  sub->callback([o, exit_code] {
    *exit_code = tools::ResolveSnapshotArg(o->path, "inspect", kExitError);
    if (*exit_code == 0) *exit_code = RunInspect(*o);
  });
}

}  // namespace vmsnap::cli
