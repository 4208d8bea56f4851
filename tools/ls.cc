// SPDX-License-Identifier: MIT
// vmsnap ls: the snapshots in a chunk store.
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "store/catalog.h"
#include "store/store_url.h"
#include "tools/command.h"
#include "tools/progress.h"
#include "tools/tool_util.h"

namespace vmsnap::cli {
namespace {

struct LsArgs {
  std::string url, ceph_conf;
  bool json = false;
};

int RunLs(const LsArgs& a) {
  auto url = store::ParseStoreUrl(a.url, /*name_required=*/false);
  if (!url.ok()) return tools::Fail("ls", "", url.status(), kExitError);
  auto st = store::OpenStore(*url, a.ceph_conf);
  if (!st.ok()) return tools::Fail("ls", "", st.status(), kExitError);
  auto r = store::ListSnapshots(**st, url->name);
  if (!r.ok()) return tools::Fail("ls", "", r.status(), kExitError);
  if (a.json) {
    nlohmann::ordered_json j = nlohmann::ordered_json::array();
    for (const auto& s : *r) {
      nlohmann::ordered_json e;
      e["name"] = s.name;
      e["url"] = store::SnapshotUrl(*url, s.name);
      e["file_bytes"] = s.file_bytes;
      e["chunks"] = s.chunks;
      if (!s.parent.empty()) e["parent"] = s.parent;
      j.push_back(std::move(e));
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    for (const auto& s : *r) {
      std::printf("%s\t%s\t%llu chunks%s%s\n", s.name.c_str(), tools::HumanBytes(s.file_bytes).c_str(),
                  static_cast<unsigned long long>(s.chunks), s.parent.empty() ? "" : "\tparent ", s.parent.c_str());
    }
  }
  return kExitOk;
}

}  // namespace

void RegisterLs(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<LsArgs>();
  CLI::App* sub = app.add_subcommand("ls", "List the snapshots in a chunk store whose names start with the URL's NAME part.");
  sub->add_option("URL-PREFIX", a->url, "rados://POOL[/PREFIX] or s3://BUCKET/[PREFIX/][NAME-PREFIX]")->required();
  sub->add_option("--ceph-conf", a->ceph_conf, "ceph.conf of the cluster, for rados:// (default: CEPH_CONF, then /etc/ceph/ceph.conf); an S3 store comes from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY");
  sub->add_flag("--json", a->json, "Print a JSON array of {name, url, file_bytes, chunks[, parent]}");
  sub->footer("Prints NAME, file size and chunk count per snapshot, and an incremental snapshot's parent. Exit status: 0 listed; 2 error.");
  sub->callback([a, exit_code] { *exit_code = RunLs(*a); });
}

}  // namespace vmsnap::cli
