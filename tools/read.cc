// SPDX-License-Identifier: MIT
// vmsnap read: bytes of guest memory by physical address, or by virtual
// address through a vCPU's page tables as captured.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "format/chain.h"
#include "format/output.h"
#include "tools/tool_util.h"
#include "tools/command.h"
#include "tools/forensics/cli_util.h"
#include "guest/memory.h"
#include "guest/paging.h"

namespace vmsnap::cli {
namespace {

struct ReadArgs {
  std::string snapshot;
  std::string gpa;
  std::string gva;
  uint64_t vcpu = 0;
  std::string len;
  std::string format = "hex";
  std::string output = "-";
};

// A run of guest-physical bytes that backs part of the requested range.
struct Segment {
  uint64_t gpa;
  uint64_t len;
};

// Prints `hexdump -C`-style lines labelled with the requested address of
// their first byte.
class HexPrinter {
 public:
  explicit HexPrinter(uint64_t addr) : addr_(addr) {}
  void Add(const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) {
      line_[fill_++] = p[i];
      if (fill_ == 16) Flush();
    }
  }
  void Flush() {
    if (fill_ == 0) return;
    std::printf("%016" PRIx64 " ", addr_);
    for (size_t i = 0; i < 16; ++i) {
      if (i == 8) std::fputc(' ', stdout);
      if (i < fill_) std::printf(" %02x", line_[i]);
      else std::fputs("   ", stdout);
    }
    std::fputs("  |", stdout);
    for (size_t i = 0; i < fill_; ++i) {
      std::fputc(line_[i] >= 0x20 && line_[i] < 0x7f ? line_[i] : '.', stdout);
    }
    std::fputs("|\n", stdout);
    addr_ += fill_;
    fill_ = 0;
  }

 private:
  uint64_t addr_;
  uint8_t line_[16] = {};
  size_t fill_ = 0;
};

int RunRead(const ReadArgs& a) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "vmsnap read: %s\n", s.message().c_str());
    return kExitError;
  };
  if (a.gpa.empty() == a.gva.empty()) {
    return fail(Status::InvalidArgument("give exactly one of --gpa and --gva"));
  }
  if (a.format != "hex" && a.format != "raw") {
    return fail(Status::InvalidArgument("unknown --format '" + a.format + "' (expected hex or raw)"));
  }
  if (a.output != "-" && a.format != "raw") {
    return fail(Status::InvalidArgument("-o is for --format raw; the hexdump goes to standard output"));
  }
  const bool virt = !a.gva.empty();
  auto start = forensics::ParseNumber(virt ? a.gva : a.gpa, virt ? "--gva" : "--gpa");
  if (!start.ok()) return fail(start.status());
  auto len = forensics::ParseNumber(a.len, "--len", /*allow_suffix=*/true);
  if (!len.ok()) return fail(len.status());
  if (*start + *len < *start) {
    return fail(Status::InvalidArgument("range " + Hex(*start) + "+" + Hex(*len) +
                                        " wraps past the end of the address space"));
  }

  auto chain = SnapshotChain::Open(a.snapshot);
  if (!chain.ok()) return fail(chain.status());
  auto chain_mem = guest::ChainMemory::Create(*chain);
  if (!chain_mem.ok()) return fail(chain_mem.status());
  forensics::PageCache memory(**chain_mem);

  // Resolve the whole range before printing anything, so an unmapped page or
  // an address outside memory fails without partial output.
  std::vector<Segment> segments;
  if (!virt) {
    Status inside = guest::CheckInside(memory.regions(), *start, *len);
    if (!inside.ok()) return fail(inside);
    if (*len) segments.push_back({*start, *len});
  } else {
    auto regs = guest::PagingRegsOf(chain->leaf().manifest(), a.vcpu);
    if (!regs.ok()) return fail(regs.status());
    uint64_t gva = *start;
    uint64_t left = *len;
    while (left > 0) {
      auto t = guest::Translate(memory, *regs, gva);
      if (!t.ok()) return fail(t.status());
      if (!t->mapped) return fail(Status::InvalidArgument(guest::FaultMessage(*t)));
      const uint64_t n = std::min(left, t->page_size - (gva & (t->page_size - 1)));
      Status inside = guest::CheckInside(memory.regions(), t->gpa, n);
      if (!inside.ok()) {
        return fail(inside.Context("gva " + Hex(gva) + " maps to gpa " + Hex(t->gpa)));
      }
      if (!segments.empty() && segments.back().gpa + segments.back().len == t->gpa) {
        segments.back().len += n;
      } else {
        segments.push_back({t->gpa, n});
      }
      gva += n;
      left -= n;
    }
  }

  // Raw bytes go through the one output writer (stdout included), so a
  // file is replaced only when complete and a device is never replaced.
  std::unique_ptr<OutputFile> out;
  if (a.format == "raw") {
    OutputOptions oo;
    oo.stream_ok = true;
    oo.inputs = tools::ChainPaths(*chain);
    oo.what = "raw memory";
    auto o = OutputFile::Create(a.output, oo);
    if (!o.ok()) return fail(o.status());
    out = std::move(o).value();
  }
  HexPrinter hex(*start);
  constexpr uint64_t kPiece = 1ull << 20;
  std::vector<uint8_t> buf(static_cast<size_t>(std::min(*len, kPiece)));
  for (const Segment& s : segments) {
    for (uint64_t done = 0; done < s.len;) {
      const uint64_t n = std::min(kPiece, s.len - done);
      Status st = (*chain_mem)->Read(s.gpa + done, n, buf.data());
      if (!st.ok()) {
        hex.Flush();
        std::fflush(stdout);
        return fail(st);
      }
      if (out) {
        Status w = out->Append(buf.data(), n);
        if (!w.ok()) return fail(w);
      } else {
        hex.Add(buf.data(), n);
      }
      done += n;
    }
  }
  hex.Flush();
  if (out) {
    Status c = out->Commit();
    if (!c.ok()) return fail(c);
  }
  if (std::fflush(stdout) != 0) return fail(Status::FromErrno(errno, "write to stdout"));
  return kExitOk;
}

}  // namespace

void RegisterRead(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand(
      "read", "Read guest memory by physical address, or by virtual address through a vCPU's page tables");
  auto a = std::make_shared<ReadArgs>();
  sub->add_option("SNAPSHOT", a->snapshot, "Snapshot file (its parents are followed)")->required();
  auto* gpa = sub->add_option("--gpa", a->gpa, "Guest-physical address (decimal or 0x-hex)");
  auto* gva = sub->add_option("--gva", a->gva, "Guest-virtual address, translated through --vcpu's page tables");
  gpa->excludes(gva);
  sub->add_option("--vcpu", a->vcpu, "vCPU whose page tables translate --gva (default 0)");
  sub->add_option("--len", a->len, "Bytes to read (decimal, 0x-hex, K/M/G suffix)")->required();
  sub->add_option("--format", a->format, "hex (a hexdump, the default) or raw (the bytes)");
  sub->add_option("-o,--output", a->output,
                  "With --format raw: where the bytes go ('-', the default, for standard output; a file "
                  "is written to a temporary name and renamed)");
  sub->callback([exit_code, a] { *exit_code = RunRead(*a); });
}

}  // namespace vmsnap::cli
