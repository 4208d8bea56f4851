// SPDX-License-Identifier: MIT
// vmsnap pull: rebuild a pushed snapshot as a local file, byte for byte.
#include <cstdio>
#include <memory>
#include <string>

#include "store/pull.h"
#include "store/store_url.h"
#include "tools/command.h"
#include "tools/progress.h"
#include "tools/tool_util.h"

namespace vmsnap::cli {
namespace {

struct PullArgs {
  std::string url, output, ceph_conf;
  unsigned parallel = 16;
};

int RunPull(const PullArgs& a) {
  auto url = store::ParseStoreUrl(a.url, /*name_required=*/true);
  if (!url.ok()) return tools::Fail("pull", "", url.status(), kExitError);
  if (a.output == "-") {
    return tools::Fail("pull", "", Status::InvalidArgument("-o -: a snapshot is not a stream; name a file"), kExitError);
  }
  auto st = store::OpenStore(*url, a.ceph_conf);
  if (!st.ok()) return tools::Fail("pull", "", st.status(), kExitError);
  tools::ProgressBar bar("pulling", 0);
  auto r = store::Pull(**st, url->name, a.output, a.parallel, [&](uint64_t done, uint64_t total) {
    bar.SetTotal(total);
    bar.Update(done);
  });
  bar.Finish();
  if (!r.ok()) return tools::Fail("pull", a.output, r.status(), kExitError);
  std::printf("%s: %llu chunks, %s\n", a.output.c_str(), static_cast<unsigned long long>(r->chunks),
              tools::HumanBytes(r->file_bytes).c_str());
  for (const std::string& p : r->parents_written) std::printf("  its parent %s written\n", p.c_str());
  for (const std::string& p : r->parents_kept) std::printf("  its parent %s already there\n", p.c_str());
  return kExitOk;
}

}  // namespace

void RegisterPull(CLI::App& app, int* exit_code) {
  auto a = std::make_shared<PullArgs>();
  CLI::App* sub = app.add_subcommand(
      "pull",
      "Write a snapshot from a chunk store to a local file, identical to the file that was pushed. Every "
      "chunk is checked against the SHA-256 it is named by as it arrives; the file appears only when "
      "complete. An incremental snapshot's parents are written where its manifest looks for them "
      "(a file already there must be that parent). See docs/store.md.");
  sub->add_option("URL", a->url, "rados://POOL/NAME or s3://BUCKET/PREFIX/NAME")->required();
  sub->add_option("-o,--output", a->output, "Snapshot file to write")->required();
  sub->add_option("--ceph-conf", a->ceph_conf, "ceph.conf of the cluster, for rados:// (default: CEPH_CONF, then /etc/ceph/ceph.conf); an S3 store comes from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY");
  sub->add_option("--parallel", a->parallel, "Objects in flight at once (default 16)")->check(CLI::Range(1, 256));
  sub->footer("Exit status: 0 pulled; 2 error (no such snapshot, a chunk missing or altered, store "
              "unreachable), with one line naming the object.");
  sub->callback([a, exit_code] { *exit_code = RunPull(*a); });
}

}  // namespace vmsnap::cli
