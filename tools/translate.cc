// SPDX-License-Identifier: MIT
// vmsnap translate: shows each level of the page walk that turns a guest-virtual
// address into a guest-physical one, as a vCPU's captured registers set it up.
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "format/chain.h"
#include "tools/command.h"
#include "tools/forensics/cli_util.h"
#include "guest/memory.h"
#include "guest/paging.h"

namespace vmsnap::cli {
namespace {

struct TranslateArgs {
  std::string snapshot;
  std::string gva;
  uint64_t vcpu = 0;
  bool json = false;
};

std::string PageSizeName(uint64_t size) {
  if (size >= (1ull << 30)) return std::to_string(size >> 30) + " GiB";
  if (size >= (1ull << 20)) return std::to_string(size >> 20) + " MiB";
  return std::to_string(size >> 10) + " KiB";
}

std::string EntryHex(const guest::WalkStep& s) {
  char buf[24];
  std::snprintf(buf, sizeof buf, s.entry_bytes == 4 ? "0x%08" PRIx64 : "0x%016" PRIx64, s.entry);
  return buf;
}

int RunTranslate(const TranslateArgs& a) {
  auto fail = [](const Status& s) {
    std::fprintf(stderr, "vmsnap translate: %s\n", s.message().c_str());
    return kExitError;
  };
  auto gva = forensics::ParseNumber(a.gva, "--gva");
  if (!gva.ok()) return fail(gva.status());
  auto chain = SnapshotChain::Open(a.snapshot);
  if (!chain.ok()) return fail(chain.status());
  auto chain_mem = guest::ChainMemory::Create(*chain);
  if (!chain_mem.ok()) return fail(chain_mem.status());
  forensics::PageCache memory(**chain_mem);
  auto regs = guest::PagingRegsOf(chain->leaf().manifest(), a.vcpu);
  if (!regs.ok()) return fail(regs.status());
  auto t = guest::Translate(memory, *regs, *gva);
  if (!t.ok()) return fail(t.status());

  if (a.json) {
    nlohmann::ordered_json j;
    j["gva"] = Hex(*gva);
    j["vcpu"] = a.vcpu;
    j["mode"] = guest::ModeName(t->mode);
    if (regs->arm64) {
      j["tcr_el1"] = Hex(regs->tcr);
      j["table_register"] = t->root_name;
      j["table_base"] = Hex(t->root);
    } else {
      j["cr3"] = Hex(regs->cr3);
    }
    auto steps = nlohmann::ordered_json::array();
    for (const auto& s : t->steps) {
      nlohmann::ordered_json js;
      js["level"] = s.level;
      js["table"] = Hex(s.table_gpa);
      js["index"] = s.index;
      js["entry_address"] = Hex(s.entry_gpa);
      js["entry"] = Hex(s.entry);
      js["flags"] = guest::EntryFlags(s);
      steps.push_back(std::move(js));
    }
    j["steps"] = std::move(steps);
    j["mapped"] = t->mapped;
    if (t->mapped) {
      j["gpa"] = Hex(t->gpa);
      j["page_size"] = t->page_size;
    } else {
      j["fault"] = {{"level", t->steps.back().level},
                    {"entry_address", Hex(t->steps.back().entry_gpa)},
                    {"entry", Hex(t->steps.back().entry)},
                    {"reason", t->fault}};
    }
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("gva %s  vCPU %" PRIu64 "  paging %s  %s %s\n", Hex(*gva).c_str(), a.vcpu,
                guest::ModeName(t->mode), t->root_name, Hex(t->root).c_str());
    for (const auto& s : t->steps) {
      std::printf("  %-4s  table %-12s  index %3u  entry at %-12s = %s  %s\n", s.level,
                  Hex(s.table_gpa).c_str(), s.index, Hex(s.entry_gpa).c_str(),
                  EntryHex(s).c_str(), guest::EntryFlags(s).c_str());
    }
    if (t->mapped) {
      std::printf("gpa %s  (%s page at %s)\n", Hex(t->gpa).c_str(), PageSizeName(t->page_size).c_str(),
                  Hex(t->gpa & ~(t->page_size - 1)).c_str());
    }
  }
  std::fflush(stdout);
  if (!t->mapped) return fail(Status::InvalidArgument(guest::FaultMessage(*t)));
  return kExitOk;
}

}  // namespace

void RegisterTranslate(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand(
      "translate", "Show the page walk that translates a guest-virtual address for a vCPU");
  auto a = std::make_shared<TranslateArgs>();
  sub->add_option("SNAPSHOT", a->snapshot, "Snapshot file (its parents are followed)")->required();
  sub->add_option("--gva", a->gva, "Guest-virtual address (decimal or 0x-hex)")->required();
  sub->add_option("--vcpu", a->vcpu, "vCPU whose page tables to walk (default 0)");
  sub->add_flag("--json", a->json, "Print one JSON object");
  sub->callback([exit_code, a] { *exit_code = RunTranslate(*a); });
}

}  // namespace vmsnap::cli
