// SPDX-License-Identifier: MIT
// vmsnap push: upload a snapshot to a chunk store, only the chunks it lacks.
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "store/push.h"
#include "store/store_url.h"
#include "tools/command.h"
#include "tools/progress.h"
#include "tools/tool_util.h"

namespace vmsnap::cli {
namespace {

struct PushArgs {
  std::string snapshot, url, ceph_conf, parent_name;
  unsigned parallel = 16;
  bool json = false;
};

int RunPush(const PushArgs& a) {
  auto url = store::ParseStoreUrl(a.url, /*name_required=*/true);
  if (!url.ok()) return tools::Fail("push", "", url.status(), kExitError);
  auto st = store::OpenStore(*url, a.ceph_conf);
  if (!st.ok()) return tools::Fail("push", "", st.status(), kExitError);
  tools::ProgressBar bar("pushing", 0);
  store::PushOptions o;
  o.parallel = a.parallel;
  o.parent_name = a.parent_name;
  o.progress = [&](uint64_t done, uint64_t total) {
    bar.SetTotal(total);
    bar.Update(done);
  };
  auto r = store::Push(a.snapshot, **st, url->name, o);
  bar.Finish();
  if (!r.ok()) return tools::Fail("push", a.snapshot, r.status(), kExitError);
  const store::PushStats& s = *r;
  if (a.json) {
    nlohmann::ordered_json j;
    j["url"] = a.url;
    j["file_bytes"] = s.file_bytes;
    j["chunks"] = s.chunks;
    j["uploaded_chunks"] = s.uploaded_chunks;
    j["uploaded_bytes"] = s.uploaded_bytes;
    j["present_chunks"] = s.present_chunks;
    j["present_bytes"] = s.present_bytes;
    j["layout_bytes"] = s.layout_bytes;
    if (!s.parent.empty()) j["parent"] = s.parent;
    j["pushed_parents"] = s.pushed_parents;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s: %llu chunks uploaded (%s), %llu already there (%s), layout %s\n", a.url.c_str(),
                static_cast<unsigned long long>(s.uploaded_chunks), tools::HumanBytes(s.uploaded_bytes).c_str(),
                static_cast<unsigned long long>(s.present_chunks), tools::HumanBytes(s.present_bytes).c_str(),
                tools::HumanBytes(s.layout_bytes).c_str());
    for (const std::string& p : s.pushed_parents) std::printf("  pushed its parent %s first\n", p.c_str());
  }
  return kExitOk;
}

}  // namespace

void RegisterPush(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<PushArgs>();
  CLI::App* sub = app.add_subcommand(
      "push",
      "Upload a snapshot to a chunk store: each chunk is an object named by the SHA-256 of its bytes, so "
      "only chunks the store lacks are uploaded, and the snapshot's layout object is written last (a "
      "reader never sees a snapshot whose chunks are not all there). Running it again after a failure "
      "uploads only what is missing. See docs/store.md.");
  sub->add_option("SNAPSHOT", a->snapshot, "Snapshot file (.vmsnap)")->required();
  sub->add_option("URL", a->url, "rados://POOL/NAME or s3://BUCKET/PREFIX/NAME")->required();
  sub->add_option("--ceph-conf", a->ceph_conf, "ceph.conf of the cluster, for rados:// (default: CEPH_CONF, then /etc/ceph/ceph.conf); an S3 store comes from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY");
  sub->add_option("--parallel", a->parallel, "Objects in flight at once (default 16)")->check(CLI::Range(1, 256));
  sub->add_option("--parent-name", a->parent_name,
                  "An incremental snapshot: its parent's name in the store (default: the parent's file name "
                  "without .vmsnap, beside NAME); a parent the store lacks is pushed first");
  sub->add_flag("--json", a->json, "Print the counts as JSON");
  sub->footer("Prints what was uploaded and what was already there. Exit status: 0 pushed; 2 error (bad "
              "snapshot, store unreachable, wrong pool or credentials), with one line naming it.");
  sub->callback([a, exit_code] { *exit_code = RunPush(*a); });
}

}  // namespace vmsnap::cli
