// SPDX-License-Identifier: MIT
// s390x capture: CMMA values (a peek pass, or migration-mode passes that a live
// snapshot repeats while the guest runs), storage keys, the TOD clock and each
// vCPU's registers, into the manifest's s390 structs. Guest memory itself is
// the format library's business, not this module's.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "capture/capture.h"
#include "base/status.h"
#include "kvm/s390x/s390.h"
#include "schemas/manifest.capnp.h"

namespace vmsnap::capture::s390x {

struct GfnRange {
  uint64_t start_gfn = 0;
  uint64_t npages = 0;
};

enum class CmmaMode {
  kPeek,       // KVM_S390_CMMA_PEEK over every range: no side effects, needs the ranges
  kMigration,  // migration mode: START marks every page dirty, read until none remain
};

struct Options {
  std::vector<GfnRange> memory;           // the guest's memory, as its slots cover it
  CmmaMode cmma_mode = CmmaMode::kMigration;
  uint32_t cmma_buffer = 512 * 1024;      // values per GET_CMMA_BITS (QEMU's size)
  uint64_t skeys_block = kvm::s390::kSkeysMax;  // keys per GET_SKEYS
};

// CMMA values gathered across migration-mode passes. A live snapshot calls
// Start() once, Pass() between guest runs (each pass returns what changed
// since the last), and the final Pass() with the vCPUs stopped.
class CmmaTracker {
 public:
  CmmaTracker(kvm::s390::Vm& vm, uint32_t buffer) : vm_(vm), buffer_(buffer) {}
  // Switches migration mode on. A VM without CMMA (ENXIO) is not an error:
  // enabled() is then false and passes do nothing.
  Status Start();
  // Reads dirty values until the kernel reports none remaining. With
  // max_calls > 0 it stops after that many calls (a bounded live round).
  Status Pass(unsigned max_calls = 0);
  Status Stop();
  bool enabled() const { return enabled_; }
  uint64_t calls() const { return calls_; }
  // Reads every value in `memory` with KVM_S390_CMMA_PEEK instead.
  Status Peek(std::span<const GfnRange> memory);
  // cmmaEnabled and the runs of known values.
  void Fill(schema::s390::Vm::Builder vm) const;

 private:
  void Store(uint64_t start_gfn, const uint8_t* values, uint64_t count);
  kvm::s390::Vm& vm_;
  uint32_t buffer_;
  bool enabled_ = true;
  bool started_ = false;
  uint64_t calls_ = 0;
  std::vector<uint8_t> values_;  // by gfn
  std::vector<bool> known_;
};

Status CaptureVcpu(kvm::s390::Vcpu& vcpu, schema::s390::Vcpu::Builder out);
Status CaptureSkeys(kvm::s390::Vm& vm, std::span<const GfnRange> memory, uint64_t block,
                    schema::s390::Vm::Builder out);

// Fills arch, vcpus and vm of a manifest from a VM whose vCPUs are stopped.
// With `live` (a tracker started before the guest was stopped) the final
// CMMA pass is read from it and migration mode is switched off; otherwise
// CMMA is read in one go as options.cmma_mode says.
Status CaptureManifest(kvm::s390::Vm& vm, std::span<kvm::s390::Vcpu* const> vcpus,
                       const Options& options, schema::Manifest::Builder manifest,
                       CmmaTracker* live = nullptr);

// The same behind the arch-neutral capture driver's interface.
class S390Capturer final : public ArchCapturer {
 public:
  S390Capturer(kvm::s390::Vm& vm, std::vector<kvm::s390::Vcpu*> vcpus, Options options,
               CmmaTracker* live = nullptr)
      : vm_(vm), vcpus_(std::move(vcpus)), options_(std::move(options)), live_(live) {}
  schema::Arch arch() const override { return schema::Arch::S390X; }
  uint32_t page_size() const override { return 4096; }
  Status Capture(schema::Manifest::Builder manifest) override {
    return CaptureManifest(vm_, vcpus_, options_, manifest, live_);
  }

 private:
  kvm::s390::Vm& vm_;
  std::vector<kvm::s390::Vcpu*> vcpus_;
  Options options_;
  CmmaTracker* live_;
};

}  // namespace vmsnap::capture::s390x
