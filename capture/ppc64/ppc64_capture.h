// SPDX-License-Identifier: MIT
// ppc64 capture: the hashed page table through the KVM_PPC_GET_HTAB_FD read fd
// (a first pass over the whole table, then passes with only the entries that
// changed, for live snapshots; bolted-only as an option), and each vCPU's
// registers (kvm_regs, SLB and SDR1 from kvm_sregs, SPRs through ONE_REG).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "capture/capture.h"
#include "base/status.h"
#include "kvm/ppc64/ppc64.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::capture::ppc64 {

struct Options {
  bool bolted_only = false;   // KVM_GET_HTAB_BOLTED_ONLY
  size_t read_buffer = 64 * 1024;
  // log2 of the HPT size when the VMM knows it (it chose it); 0: taken from
  // the first pass, which covers every index of the table.
  uint32_t htab_shift = 0;
};

// The guest's HPT as seen through one read fd, kept up to date pass by pass.
class HtabReader {
 public:
  static Result<std::unique_ptr<HtabReader>> Open(kvm::ppc::Vm& vm, const Options& options);
  // Reads until read() returns 0: the table is complete and nothing changed
  // since. With max_reads > 0 it stops after that many reads (a bounded live
  // round while the guest runs).
  Status Pass(unsigned max_reads = 0);
  // Parses one buffer of records into the table (exposed for tests).
  Status Apply(const uint8_t* data, size_t len);
  uint64_t reads() const { return reads_; }
  const std::map<uint64_t, std::pair<uint64_t, uint64_t>>& entries() const { return entries_; }
  Status Fill(schema::ppc::Htab::Builder out) const;

 private:
  HtabReader(std::unique_ptr<kvm::ppc::HtabFile> fd, Options options)
      : fd_(std::move(fd)), options_(options) {}
  std::unique_ptr<kvm::ppc::HtabFile> fd_;
  Options options_;
  uint64_t reads_ = 0;
  uint64_t table_end_ = 0;  // highest index + 1 any record covered
  std::map<uint64_t, std::pair<uint64_t, uint64_t>> entries_;  // valid: index -> (v, r)
};

Status CaptureVcpu(kvm::ppc::Vcpu& vcpu, schema::ppc::Vcpu::Builder out);

// Fills arch, vcpus and vm of a manifest from a VM whose vCPUs are stopped.
// With `live` (a reader opened before the guest was stopped) the final pass
// is read from it; otherwise a new reader takes the whole table.
Status CaptureManifest(kvm::ppc::Vm& vm, std::span<kvm::ppc::Vcpu* const> vcpus,
                       const Options& options, schema::Manifest::Builder manifest,
                       HtabReader* live = nullptr);

class PpcCapturer final : public ArchCapturer {
 public:
  PpcCapturer(kvm::ppc::Vm& vm, std::vector<kvm::ppc::Vcpu*> vcpus, Options options,
              uint32_t page_size = 65536, HtabReader* live = nullptr)
      : vm_(vm), vcpus_(std::move(vcpus)), options_(options), page_size_(page_size), live_(live) {}
  schema::Arch arch() const override { return schema::Arch::PPC64; }
  uint32_t page_size() const override { return page_size_; }
  Status Capture(schema::Manifest::Builder manifest) override {
    return CaptureManifest(vm_, vcpus_, options_, manifest, live_);
  }

 private:
  kvm::ppc::Vm& vm_;
  std::vector<kvm::ppc::Vcpu*> vcpus_;
  Options options_;
  uint32_t page_size_;
  HtabReader* live_;
};

}  // namespace vmsnap::capture::ppc64
