// SPDX-License-Identifier: MIT
// vmsnap gc: delete the chunks of a chunk store that no snapshot references.
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

struct GcArgs {
  std::string url, ceph_conf;
  uint64_t grace = 3600;
  bool dry_run = false;
  bool json = false;
};

int RunGc(const GcArgs& a) {
  auto url = store::ParseStoreUrl(a.url, /*name_required=*/false);
  if (!url.ok()) return tools::Fail("gc", "", url.status(), kExitError);
  if (!url->name.empty()) {
    return tools::Fail("gc", "", Status::InvalidArgument(a.url + ": gc works on a whole store (chunks are shared by every snapshot in it); give " + store::StoreRoot(*url) + (url->scheme == "s3" ? "/" : "")), kExitError);
  }
  auto st = store::OpenStore(*url, a.ceph_conf);
  if (!st.ok()) return tools::Fail("gc", "", st.status(), kExitError);
  auto r = store::CollectGarbage(**st, a.grace, a.dry_run);
  if (!r.ok()) return tools::Fail("gc", "", r.status(), kExitError);
  const store::GcStats& s = *r;
  if (a.json) {
    nlohmann::ordered_json j;
    j["snapshots"] = s.snapshots;
    j["chunks"] = s.chunks;
    j["removed_chunks"] = s.removed_chunks;
    j["removed_bytes"] = s.removed_bytes;
    j["young_chunks"] = s.young_chunks;
    j["raced_chunks"] = s.raced_chunks;
    j["dry_run"] = a.dry_run;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s: %llu snapshots, %llu chunks; %s %llu unreferenced chunks (%s); kept %llu marked within "
                "the grace period\n",
                a.url.c_str(), static_cast<unsigned long long>(s.snapshots), static_cast<unsigned long long>(s.chunks),
                a.dry_run ? "would remove" : "removed", static_cast<unsigned long long>(s.removed_chunks),
                tools::HumanBytes(s.removed_bytes).c_str(),
                static_cast<unsigned long long>(s.young_chunks + s.raced_chunks));
  }
  return kExitOk;
}

}  // namespace

void RegisterGc(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<GcArgs>();
  CLI::App* sub = app.add_subcommand(
      "gc",
      "Delete the chunk objects of a store (a pool, or a bucket folder) that no snapshot layout references. Safe beside a running push: "
      "a push marks every chunk it relies on before it writes its layout, and gc deletes only chunks "
      "whose mark is older than --grace, comparing the mark again in the same atomic step as the delete. "
      "Remove a snapshot by deleting its layout object (vmsnap.snap.NAME), then run gc.");
  sub->add_option("URL-PREFIX", a->url, "rados://POOL, or s3://BUCKET/[PREFIX/] (the trailing / says the store is the folder)")->required();
  sub->add_option("--ceph-conf", a->ceph_conf, "ceph.conf of the cluster, for rados:// (default: CEPH_CONF, then /etc/ceph/ceph.conf); an S3 store comes from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY");
  sub->add_option("--grace", a->grace, "Seconds a chunk's mark protects it (default 3600; longer than any push)");
  sub->add_flag("--dry-run", a->dry_run, "Count what would be deleted, delete nothing");
  sub->add_flag("--json", a->json, "Print the counts as JSON");
  sub->footer("Exit status: 0 done; 2 error (store unreachable, an unreadable layout: nothing is deleted then).");
  sub->callback([a, exit_code] { *exit_code = RunGc(*a); });
}

}  // namespace vmsnap::cli
