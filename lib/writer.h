// SPDX-License-Identifier: MIT
// The writer handle behind vmsnap_writer, shared by the write side and the
// KVM helpers (vmsnap_vm_capture fills a writer from a live VM).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "capture/dirty/incremental.h"
#include "lib/arch_state.h"
#include "lib/internal.h"
#include "lib/x86_state.h"

struct vmsnap_writer {
  struct Region {
    uint32_t slot;
    uint32_t flags;
    uint64_t gpa;
    uint64_t size;
    std::string name;
  };
  struct Device {
    std::string name;
    uint32_t version;
    std::vector<uint8_t> data;
  };
  std::unique_ptr<vmsnap::SnapshotWriter> writer;
  std::string path;
  vmsnap_arch arch = VMSNAP_ARCH_X86_64;
  uint32_t page_size = 4096;
  std::string compression;
  std::string tool_version;
  // x86_64 state; the other architectures keep theirs in `other`.
  std::vector<std::unique_ptr<vmsnap::capi::StateVcpuOps>> vcpus;
  std::unique_ptr<vmsnap::capi::ArchWriter> other;
  std::map<uint32_t, kvm_irqchip> irqchips;
  std::optional<kvm_pit_state2> pit;
  std::optional<kvm_clock_data> clock;
  std::optional<vmsnap::kvm::x86::VmConfig> config;
  std::vector<Region> regions;
  uint64_t memory_end = 0;
  std::vector<Device> devices;
  std::optional<vmsnap::capture::dirty::ParentInfo> parent;
  bool finished = false;
};

namespace vmsnap::capi {
kvm::x86::VmConfig ConfigFromC(const vmsnap_x86_vm_config& c);
// DIRTY: null for every page of the region, else one bit per page.
int WriterAddRegion(vmsnap_writer* w, const vmsnap_region* region, const uint8_t* dirty);
Status CommitWriter(vmsnap_writer& w);
}  // namespace vmsnap::capi
