# SPDX-License-Identifier: MIT
# x86-64 vCPU and VM state, one named field per piece of KVM state.
# Field names follow the kernel's uapi structs (arch/x86/include/uapi/asm/kvm.h);
# docs/state-coverage.md says which ioctl fills and restores each.
@0xe83154d903ad8ef5;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("vmsnap::schema::x86");
using Common = import "common.capnp";

struct Vcpu {
  mpState @0 :UInt32;            # KVM_MP_STATE_* (0 RUNNABLE, 3 HALTED, ...)
  regs @1 :Regs;
  sregs @2 :Sregs;
  xsave @3 :Data $Common.decoded("xsave");   # KVM_GET_XSAVE(2) area, as the kernel gives it
  xcrs @4 :List(Xcr);
  debugregs @5 :DebugRegs;
  lapic @6 :Data $Common.decoded("lapic");   # struct kvm_lapic_state.regs, 1024 bytes
  msrs @7 :List(Msr);            # sorted by index
  events @8 :VcpuEvents;
  cpuid @9 :List(CpuidEntry);
  tscKhz @10 :UInt32 $Common.decimal;
  # Optional features a restore must honour; unset when absent.
  kvmclockCtrl @11 :Bool;        # KVM_KVMCLOCK_CTRL should be called after restore
}

struct Regs {
  rax @0 :UInt64;  rbx @1 :UInt64;  rcx @2 :UInt64;  rdx @3 :UInt64;
  rsi @4 :UInt64;  rdi @5 :UInt64;  rsp @6 :UInt64;  rbp @7 :UInt64;
  r8 @8 :UInt64;   r9 @9 :UInt64;   r10 @10 :UInt64; r11 @11 :UInt64;
  r12 @12 :UInt64; r13 @13 :UInt64; r14 @14 :UInt64; r15 @15 :UInt64;
  rip @16 :UInt64; rflags @17 :UInt64;
}

struct Segment {
  base @0 :UInt64;
  limit @1 :UInt32;
  selector @2 :UInt16;
  type @3 :UInt8;
  present @4 :UInt8;
  dpl @5 :UInt8;
  db @6 :UInt8;
  s @7 :UInt8;
  l @8 :UInt8;
  g @9 :UInt8;
  avl @10 :UInt8;
  unusable @11 :UInt8;
}

struct DTable {
  base @0 :UInt64;
  limit @1 :UInt16;
}

struct Sregs {
  cs @0 :Segment;  ds @1 :Segment;  es @2 :Segment;  fs @3 :Segment;
  gs @4 :Segment;  ss @5 :Segment;  tr @6 :Segment;  ldt @7 :Segment;
  gdt @8 :DTable;  idt @9 :DTable;
  cr0 @10 :UInt64; cr2 @11 :UInt64; cr3 @12 :UInt64; cr4 @13 :UInt64;
  cr8 @14 :UInt64;
  efer @15 :UInt64;
  apicBase @16 :UInt64;
  interruptBitmap @17 :List(UInt64);   # 4 words; pending external interrupt (KVM_GET_SREGS)
  pdptrs @18 :List(UInt64);            # 4 entries when sregs2 reported them valid
}

struct Xcr {
  xcr @0 :UInt32 $Common.decimal;
  value @1 :UInt64;
}

struct DebugRegs {
  dr0 @0 :UInt64; dr1 @1 :UInt64; dr2 @2 :UInt64; dr3 @3 :UInt64;
  dr6 @4 :UInt64; dr7 @5 :UInt64;
  flags @6 :UInt64;
}

struct Msr {
  index @0 :UInt32;
  value @1 :UInt64;
}

# struct kvm_vcpu_events, with the valid-flags that say which parts are meaningful.
struct VcpuEvents {
  exception @0 :Exception;
  interrupt @1 :Interrupt;
  nmi @2 :Nmi;
  sipiVector @3 :UInt32;
  flags @4 :UInt32;              # KVM_VCPUEVENT_VALID_* as read
  smi @5 :Smi;
  tripleFault @6 :UInt8;         # triple_fault.pending
  exceptionHasPayload @7 :UInt8;
  exceptionPayload @8 :UInt64;

  struct Exception {
    injected @0 :UInt8;
    nr @1 :UInt8;
    hasErrorCode @2 :UInt8;
    pending @3 :UInt8;
    errorCode @4 :UInt32;
  }
  struct Interrupt {
    injected @0 :UInt8;
    nr @1 :UInt8;
    soft @2 :UInt8;
    shadow @3 :UInt8;
  }
  struct Nmi {
    injected @0 :UInt8;
    pending @1 :UInt8;
    masked @2 :UInt8;
  }
  struct Smi {
    smm @0 :UInt8;
    pending @1 :UInt8;
    smmInsideNmi @2 :UInt8;
    latchedInit @3 :UInt8;
  }
}

struct CpuidEntry {
  function @0 :UInt32;
  index @1 :UInt32;
  flags @2 :UInt32;
  eax @3 :UInt32;
  ebx @4 :UInt32;
  ecx @5 :UInt32;
  edx @6 :UInt32;
}

# VM-level state, and the VM configuration replayed before any vCPU state.
struct Vm {
  config @0 :VmConfig;
  picMaster @1 :Pic;
  picSlave @2 :Pic;
  ioapic @3 :Ioapic;
  pit @4 :Pit;
  clock @5 :Clock;
}

struct VmConfig {
  tssAddr @0 :UInt64;
  identityMapAddr @1 :UInt64;
  irqchip @2 :Bool;              # KVM_CREATE_IRQCHIP
  pit @3 :Bool;                  # KVM_CREATE_PIT2
  pitFlags @4 :UInt32;
  enabledCaps @5 :List(EnabledCap);
  dirtyRingBytes @6 :UInt32 $Common.decimal;  # per vCPU; 0 when the ring was not used
}

struct EnabledCap {
  cap @0 :UInt32 $Common.decimal;
  name @1 :Text;
  args @2 :List(UInt64);
}

# struct kvm_pic_state
struct Pic {
  lastIrr @0 :UInt8;
  irr @1 :UInt8;
  imr @2 :UInt8;
  isr @3 :UInt8;
  priorityAdd @4 :UInt8;
  irqBase @5 :UInt8;
  readReg @6 :UInt8;
  pollMode @7 :UInt8;
  specialMask @8 :UInt8;
  initState @9 :UInt8;
  autoEoi @10 :UInt8;
  rotateOnAutoEoi @11 :UInt8;
  specialFullyNested @12 :UInt8;
  init4 @13 :UInt8;
  elcr @14 :UInt8;
  elcrMask @15 :UInt8;
}

# struct kvm_ioapic_state
struct Ioapic {
  baseAddress @0 :UInt64;
  ioregsel @1 :UInt32;
  id @2 :UInt32;
  irr @3 :UInt32;
  redirtbl @4 :List(UInt64);     # 24 entries
}

# struct kvm_pit_state2
struct Pit {
  channels @0 :List(PitChannel); # 3
  flags @1 :UInt32;
}

struct PitChannel {
  count @0 :UInt32;
  latchedCount @1 :UInt16;
  countLatched @2 :UInt8;
  statusLatched @3 :UInt8;
  status @4 :UInt8;
  readState @5 :UInt8;
  writeState @6 :UInt8;
  writeLatch @7 :UInt8;
  rwMode @8 :UInt8;
  mode @9 :UInt8;
  bcd @10 :UInt8;
  gate @11 :UInt8;
  countLoadTime @12 :Int64 $Common.volatile;   # host ktime, ns
}

# struct kvm_clock_data
struct Clock {
  clock @0 :UInt64 $Common.volatile;
  flags @1 :UInt32 $Common.volatile;   # KVM_CLOCK_* describe the host clocksource at capture time
  realtime @2 :UInt64 $Common.volatile;
  hostTsc @3 :UInt64 $Common.volatile;
}
