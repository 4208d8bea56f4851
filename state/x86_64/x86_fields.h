// SPDX-License-Identifier: MIT
// Every x86 kernel struct vmsnap saves, mapped to its manifest fields and back:
// Encode (capture) and Decode (restore) of each struct sit next to each other
// in x86_fields.cc, so a field cannot be added on one side only. Only the
// mapping lives here; which ioctl reads or writes a struct, and in what order,
// belongs to capture/x86_64 and restore/x86_64.
#pragma once

#include <linux/kvm.h>

#include <span>
#include <vector>

#include "base/status.h"
#include "kvm/x86_64/x86.h"
#include "schemas/x86_64.capnp.h"

namespace vmsnap::state::x86 {
namespace sx = schema::x86;

void Encode(const kvm_regs& k, sx::Regs::Builder b);
void Decode(sx::Regs::Reader r, kvm_regs& k);

// kvm_sregs carries the pending-interrupt bitmap, kvm_sregs2 the PAE PDPTRs
// (stored only when KVM flags them valid); both share everything else.
void Encode(const kvm_sregs& k, sx::Sregs::Builder b);
void Decode(sx::Sregs::Reader r, kvm_sregs& k);
void Encode(const kvm_sregs2& k, sx::Sregs::Builder b);
void Decode(sx::Sregs::Reader r, kvm_sregs2& k);

Status Encode(const kvm_xcrs& k, sx::Vcpu::Builder b);
Status Decode(sx::Vcpu::Reader r, kvm_xcrs& k);

// flags is stored as KVM reported it and decoded as 0: KVM_SET_DEBUGREGS
// defines none (non-zero is EINVAL).
void Encode(const kvm_debugregs& k, sx::DebugRegs::Builder b);
void Decode(sx::DebugRegs::Reader r, kvm_debugregs& k);

void Encode(const kvm_lapic_state& k, sx::Vcpu::Builder b);
Status Decode(sx::Vcpu::Reader r, kvm_lapic_state& k);

void Encode(std::span<const kvm_msr_entry> k, sx::Vcpu::Builder b);
std::vector<kvm_msr_entry> DecodeMsrs(sx::Vcpu::Reader r);

// Every field and the valid-flags as KVM reported them; which flags a restore
// may pass back is the restore's decision.
void Encode(const kvm_vcpu_events& k, sx::VcpuEvents::Builder b);
void Decode(sx::VcpuEvents::Reader r, kvm_vcpu_events& k);

void Encode(std::span<const kvm_cpuid_entry2> k, sx::Vcpu::Builder b);
std::vector<kvm_cpuid_entry2> DecodeCpuid(capnp::List<sx::CpuidEntry>::Reader r);

void Encode(const kvm::x86::VmConfig& k, sx::VmConfig::Builder b);
kvm::x86::VmConfig Decode(sx::VmConfig::Reader r);

void Encode(const kvm_pic_state& k, sx::Pic::Builder b);
void Decode(sx::Pic::Reader r, kvm_pic_state& k);

void Encode(const kvm_ioapic_state& k, sx::Ioapic::Builder b);
Status Decode(sx::Ioapic::Reader r, kvm_ioapic_state& k);

void Encode(const kvm_pit_state2& k, sx::Pit::Builder b);
Status Decode(sx::Pit::Reader r, kvm_pit_state2& k);

void Encode(const kvm_clock_data& k, sx::Clock::Builder b);
void Decode(sx::Clock::Reader r, kvm_clock_data& k);

}  // namespace vmsnap::state::x86
