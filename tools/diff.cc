// SPDX-License-Identifier: MIT
// vmsnap diff: what differs between two snapshots -- vCPU, VM and device state
// by field name, and guest memory page by page.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "format/chain.h"
#include "tools/command.h"
#include "tools/json_diff.h"
#include "tools/progress.h"
#include "tools/state_json.h"
#include "tools/state_text.h"
#include "tools/tool_util.h"

namespace vmsnap::cli {
namespace {

using tools::Json;

struct DiffOptions {
  std::string a, b;
  bool json = false;
  bool ignore_volatile = false;
  bool include_metadata = false;
};

struct Range {
  uint64_t start, end;  // [start, end)
};

struct MemoryDiff {
  uint64_t differing_pages = 0;
  std::vector<Range> ranges;
};

// Sorted, merged union of both snapshots' regions.
std::vector<Range> RegionUnion(const SnapshotReader& a, const SnapshotReader& b) {
  std::vector<Range> all;
  for (const SnapshotReader* r : {&a, &b}) {
    for (auto reg : r->manifest().getMemory().getRegions()) {
      uint64_t s = reg.getGuestPhysAddr(), e = s + reg.getSize();
      if (e > s) all.push_back({s, e});
    }
  }
  std::sort(all.begin(), all.end(), [](const Range& x, const Range& y) { return x.start < y.start; });
  std::vector<Range> merged;
  for (const Range& r : all) {
    if (!merged.empty() && r.start <= merged.back().end) {
      merged.back().end = std::max(merged.back().end, r.end);
    } else {
      merged.push_back(r);
    }
  }
  return merged;
}

// Streams both memories a window at a time (never either whole) and compares
// them page by page. A page outside one side's regions reads as zero there.
Result<MemoryDiff> DiffMemory(const SnapshotChain& ca, const SnapshotChain& cb) {
  const uint64_t ps = std::min(ca.leaf().page_size(), cb.leaf().page_size());
  constexpr uint64_t kWindow = 1 << 20;
  std::vector<Range> regions = RegionUnion(ca.leaf(), cb.leaf());
  uint64_t total = 0;
  for (const Range& r : regions) total += r.end - r.start;
  tools::ProgressBar bar("comparing memory", total);
  std::vector<uint8_t> wa(kWindow), wb(kWindow);
  MemoryDiff d;
  uint64_t done = 0;
  for (const Range& r : regions) {
    for (uint64_t gpa = r.start; gpa < r.end;) {
      // Windows aligned to kWindow, so they line up with the writer's chunks.
      uint64_t next = std::min(r.end, (gpa / kWindow + 1) * kWindow);
      uint64_t len = next - gpa;
      Status s = ca.ReadMemory(gpa, len, wa.data());
      if (!s.ok()) return s;
      s = cb.ReadMemory(gpa, len, wb.data());
      if (!s.ok()) return s;
      for (uint64_t off = 0; off < len; off += ps) {
        uint64_t n = std::min(ps, len - off);
        if (std::memcmp(wa.data() + off, wb.data() + off, n) == 0) continue;
        d.differing_pages++;
        uint64_t p = gpa + off;
        if (!d.ranges.empty() && d.ranges.back().end == p) {
          d.ranges.back().end = p + n;
        } else {
          d.ranges.push_back({p, p + n});
        }
      }
      done += len;
      bar.Update(done);
      gpa = next;
    }
  }
  return d;
}

int RunDiff(const DiffOptions& o) {
  auto ca = SnapshotChain::Open(o.a);
  if (!ca.ok()) return tools::Fail("diff", o.a, ca.status(), kExitError);
  auto cb = SnapshotChain::Open(o.b);
  if (!cb.ok()) return tools::Fail("diff", o.b, cb.status(), kExitError);
  tools::VolatileSet va, vb;
  auto ja = tools::SnapshotToJson(ca->leaf(), &va);
  if (!ja.ok()) return tools::Fail("diff", o.a, ja.status(), kExitError);
  auto jb = tools::SnapshotToJson(cb->leaf(), &vb);
  if (!jb.ok()) return tools::Fail("diff", o.b, jb.status(), kExitError);
  // Registers by identity: two captures of arm64 KVM need not list them in
  // the same order, nor list the same ones.
  tools::KeyArm64RegistersByName(*ja);
  tools::KeyArm64RegistersByName(*jb);
  tools::JsonDiffOptions jo;
  jo.ignore_volatile = o.ignore_volatile;
  jo.volatile_a = &va;
  jo.volatile_b = &vb;
  jo.include_metadata = o.include_metadata;
  std::vector<tools::Difference> fields = tools::DiffJson(*ja, *jb, jo);
  auto mem = DiffMemory(*ca, *cb);
  if (!mem.ok()) return tools::Fail("diff", "", mem.status(), kExitError);
  bool identical = fields.empty() && mem->differing_pages == 0;

  std::string out;
  if (o.json) {
    Json j = Json::object();
    j["identical"] = identical;
    Json diffs = Json::array();
    for (const auto& d : fields) {
      Json e = Json::object();
      e["path"] = d.path;
      e["a"] = d.a;
      e["b"] = d.b;
      diffs.push_back(std::move(e));
    }
    j["differences"] = std::move(diffs);
    Json m = Json::object();
    m["differing_pages"] = mem->differing_pages;
    Json ranges = Json::array();
    for (const Range& r : mem->ranges) {
      Json e = Json::object();
      e["start"] = Hex(r.start);
      e["end"] = Hex(r.end);
      ranges.push_back(std::move(e));
    }
    m["ranges"] = std::move(ranges);
    j["memory"] = std::move(m);
    out = j.dump(2) + "\n";
  } else if (identical) {
    out = "identical\n";
  } else {
    for (const auto& d : fields) {
      out += d.path + ": " + tools::ShortValue(d.a) + " -> " + tools::ShortValue(d.b);
      // Two blobs too long to print: say where they start to differ.
      if (d.a.is_string() && d.b.is_string()) {
        const std::string& x = d.a.get_ref<const std::string&>();
        const std::string& y = d.b.get_ref<const std::string&>();
        if (x.size() > 80 && y.size() > 80) {
          size_t i = 0;
          while (i < x.size() && i < y.size() && x[i] == y[i]) i++;
          out += "  (first difference at byte " + Hex(i / 2) + ")";
        }
      }
      out += "\n";
    }
    if (mem->differing_pages) {
      out += "memory: " + std::to_string(mem->differing_pages) + " page(s) differ in " +
             std::to_string(mem->ranges.size()) + " range(s)\n";
      for (const Range& r : mem->ranges) {
        out += "  " + Hex(r.start) + "-" + Hex(r.end) + "  (" +
               tools::HumanBytes(r.end - r.start) + ")\n";
      }
    } else {
      out += "memory: identical\n";
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (std::fflush(stdout) != 0) return tools::Fail("diff", "", Status::Io("writing to standard output failed"), kExitError);
  return identical ? kExitOk : kExitDiffDifferent;
}

std::string VolatileHelp() {
  std::string s =
      "--ignore-volatile skips state that changes with time alone, so that a capture, a restore "
      "and a second capture of the same paused VM compare equal: fields the schema annotates "
      "$Common.volatile (x86: vm.clock.clock, vm.clock.realtime, vm.clock.host_tsc, "
      "vm.pit.channels[].count_load_time; s390x: vm.tod_low), the local APIC timer current count "
      "(vcpus[].lapic_decoded.timer_current_count and its bytes 0x390-0x393 in the raw page), "
      "and these MSRs:\n";
  for (const auto& m : tools::VolatileMsrs()) {
    s += "  " + Hex(m.index) + " " + m.name + ": " + m.why + "\n";
  }
  return s;
}

}  // namespace

void RegisterDiff(CLI::App& app, int* exit_code) {
  auto o = std::make_shared<DiffOptions>();
  CLI::App* sub = app.add_subcommand(
      "diff",
      "Compare two snapshots (each with its parent chain): every vCPU, VM and device field, "
      "named as inspect --json nests it (vcpus[0].regs.rip, vcpus[1].msrs.0xc0000082), with "
      "both values; and guest memory page by page, as the number of differing pages and their "
      "guest-physical ranges.");
  sub->add_option("A", o->a, "First snapshot (a file, rados://POOL/NAME or s3://BUCKET/PREFIX/NAME)")->required();
  sub->add_option("B", o->b, "Second snapshot (a file, rados://POOL/NAME or s3://BUCKET/PREFIX/NAME)")->required();
  sub->add_flag("--json", o->json,
                "Print one JSON object: identical (bool), differences [{path, a, b}], memory "
                "{differing_pages, ranges [{start, end}]}, addresses as hex strings");
  sub->add_flag("--ignore-volatile", o->ignore_volatile,
                "Skip time-dependent state (the TSC, kvmclock, timers; listed below)");
  sub->add_flag("--include-metadata", o->include_metadata,
                "Also compare what describes the file rather than the VM: id, format_version, "
                "parent, created, save, and the memory storage figures (present_pages, "
                "zero_pages, absent_pages, stored_bytes, raw_bytes, chunks)");
  sub->footer(
      "Memory ranges are [start, end): end is exclusive. A page outside one snapshot's memory "
      "regions counts as zero there. Raw blobs with a decoded view (xsave, lapic) are compared "
      "through the decoded registers; the raw bytes are reported only when they differ where "
      "the decoder shows nothing. arm64 registers (sysregs, firmware, other_regs, reg_list) are "
      "paired by their ONE_REG id, whatever order each file lists them in, and named as inspect "
      "names them: vcpus[0].sysregs.TCR_EL1; one listed on one side only shows null on the other.\n" +
      VolatileHelp() + "Exit status: 0 identical, 1 different, 2 error.");
  sub->callback([o, exit_code] {
    *exit_code = tools::ResolveSnapshotArg(o->a, "diff", kExitError);
    if (*exit_code == 0) *exit_code = tools::ResolveSnapshotArg(o->b, "diff", kExitError);
    if (*exit_code == 0) *exit_code = RunDiff(*o);
  });
}

}  // namespace vmsnap::cli
