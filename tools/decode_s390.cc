// SPDX-License-Identifier: MIT
// s390x CMMA and storage-key decoders.
//
// CMMA values: KVM_S390_GET_CMMA_BITS (Documentation/virt/kvm/api.rst) returns
// one byte per guest page taken from the page's PGSTE (arch/s390/kvm/kvm-s390.c
// keeps the bits `(pgste >> 24) & 0x43`): bits 0-1 (value & 3) are the ESSA
// usage state -- 0 stable, 1 unused, 2 potentially volatile, 3 volatile -- and
// 0x40 is the "no DAT" flag (ESSA_SET_STABLE_NODAT). Unused and volatile pages
// may be discarded by the host and then read as zero to the guest. The kernel
// never reports other bits; a value with any is counted under "other_bits"
// and its run shows them, rather than being silently folded into a state.
//
// Storage keys (z/Architecture Principles of Operation, "Storage Key"): a 7-bit
// key per 4 KiB frame, held in a byte with the bits numbered 0-7 from the most
// significant: bits 0-3 access-control (ACC), bit 4 fetch protection (F), bit 5
// reference (R), bit 6 change (C), bit 7 unused. So acc = key >> 4,
// F = key & 0x08, R = key & 0x04, C = key & 0x02.
#include "tools/decode_s390.h"

#include <array>
#include <string>

#include "tools/state_json.h"

namespace vmsnap::tools {
namespace {
using json = nlohmann::ordered_json;

const char* const kCmmaStates[] = {"stable", "unused", "potentially_volatile", "volatile"};
constexpr uint8_t kCmmaNodat = 0x40;
constexpr uint8_t kCmmaKnownBits = 0x43;
}  // namespace

json DecodeCmma(capnp::List<schema::s390::CmmaRun>::Reader runs) {
  std::array<uint64_t, 4> counts{};
  uint64_t nodat = 0, pages = 0, other = 0;
  json out_runs = json::array();
  // A run of the output: consecutive gfns with the same state and nodat flag.
  bool open = false;
  uint64_t run_start = 0, run_len = 0;
  uint8_t run_state = 0, run_other = 0;
  bool run_nodat = false;
  auto flush = [&] {
    if (!open) return;
    json r = json::object();
    r["start_gfn"] = Hex(run_start);
    r["pages"] = run_len;
    r["state"] = kCmmaStates[run_state];
    r["nodat"] = run_nodat;
    if (run_other) r["other_bits"] = Hex(run_other);
    out_runs.push_back(std::move(r));
    open = false;
  };
  for (auto run : runs) {
    auto values = run.getValues();
    uint64_t gfn = run.getStartGfn();
    for (size_t i = 0; i < values.size(); i++, gfn++) {
      uint8_t state = values[i] & 3;
      bool nd = (values[i] & kCmmaNodat) != 0;
      uint8_t ob = values[i] & uint8_t(~kCmmaKnownBits);
      counts[state]++;
      nodat += nd;
      other += ob != 0;
      pages++;
      if (open && gfn == run_start + run_len && state == run_state && nd == run_nodat &&
          ob == run_other) {
        run_len++;
        continue;
      }
      flush();
      open = true;
      run_start = gfn;
      run_len = 1;
      run_state = state;
      run_nodat = nd;
      run_other = ob;
    }
  }
  flush();
  json j = json::object();
  j["pages"] = pages;
  json c = json::object();
  for (int s = 0; s < 4; s++) c[kCmmaStates[s]] = counts[s];
  c["nodat"] = nodat;
  c["other_bits"] = other;
  j["counts"] = std::move(c);
  j["runs"] = std::move(out_runs);
  return j;
}

json DecodeSkeys(capnp::List<schema::s390::SkeyRun>::Reader runs) {
  std::array<uint64_t, 16> by_acc{};
  uint64_t fetch = 0, ref = 0, change = 0, pages = 0;
  json out_runs = json::array();
  bool open = false;
  uint64_t run_start = 0, run_len = 0;
  uint8_t run_key = 0;
  auto flush = [&] {
    if (!open) return;
    json r = json::object();
    r["start_gfn"] = Hex(run_start);
    r["pages"] = run_len;
    r["key"] = Hex(run_key);
    r["access_key"] = run_key >> 4;
    r["fetch_protection"] = (run_key & 0x08) != 0;
    r["referenced"] = (run_key & 0x04) != 0;
    r["changed"] = (run_key & 0x02) != 0;
    out_runs.push_back(std::move(r));
    open = false;
  };
  for (auto run : runs) {
    auto keys = run.getKeys();
    uint64_t gfn = run.getStartGfn();
    for (size_t i = 0; i < keys.size(); i++, gfn++) {
      uint8_t k = keys[i];
      by_acc[k >> 4]++;
      fetch += (k & 0x08) != 0;
      ref += (k & 0x04) != 0;
      change += (k & 0x02) != 0;
      pages++;
      if (open && gfn == run_start + run_len && k == run_key) {
        run_len++;
        continue;
      }
      flush();
      open = true;
      run_start = gfn;
      run_len = 1;
      run_key = k;
    }
  }
  flush();
  json j = json::object();
  j["pages"] = pages;
  json acc = json::object();
  for (int a = 0; a < 16; a++) {
    if (by_acc[a]) acc[std::to_string(a)] = by_acc[a];
  }
  j["by_access_key"] = std::move(acc);
  j["fetch_protected"] = fetch;
  j["referenced"] = ref;
  j["changed"] = change;
  j["runs"] = std::move(out_runs);
  return j;
}

}  // namespace vmsnap::tools
