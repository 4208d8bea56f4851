# SPDX-License-Identifier: MIT
# aarch64 (arm64) vCPU and VM state: ONE_REG registers by name and by id, the vGICv3 and its ITS.
# Names follow arch/arm64/include/uapi/asm/kvm.h and the Arm architecture.
@0x83385f9dd781498f;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("vmsnap::schema::aarch64");
using Common = import "common.capnp";

struct Vcpu {
  mpState @0 :UInt32;              # KVM_MP_STATE_RUNNABLE (0), _STOPPED (5, PSCI off), _SUSPENDED (10)
  init @1 :VcpuInit;
  core @2 :Core;
  fp @3 :Fp;                       # empty v when the vCPU has SVE (the Z registers hold them)
  sve @4 :Sve;                     # absent (vls empty) without the SVE feature
  # Every KVM_REG_ARM64_SYSREG register the list holds, except the timer's, by
  # ONE_REG id (0x6030 0000 0013 <op0:2><op1:3><CRn:4><CRm:4><op2:3>); inspect names them.
  sysregs @5 :List(SysReg);
  timer @6 :Timer;
  firmware @7 :List(SysReg);       # KVM_REG_ARM_FW and _FW_FEAT_BMAP pseudo-registers, by id
  events @8 :Events;
  # Listed registers of no class above (e.g. the CCSIDR demux), as raw bytes.
  otherRegs @9 :List(OneReg);
  # KVM_GET_REG_LIST as the source host answered it, in its order. A restore
  # onto a host that lacks one of them names it.
  regList @10 :List(UInt64);
}

# KVM_ARM_VCPU_INIT: target (KVM_ARM_TARGET_*, 5 = GENERIC_V8) and the
# 7 feature words (bit 0 POWER_OFF, 1 EL1_32BIT, 2 PSCI_0_2, 3 PMU_V3, 4 SVE,
# 5 PTRAUTH_ADDRESS, 6 PTRAUTH_GENERIC, 7 HAS_EL2); inspect names the bits.
struct VcpuInit {
  target @0 :UInt32 $Common.decimal;
  features @1 :List(UInt32);
  sveFinalized @2 :Bool;           # KVM_ARM_VCPU_FINALIZE(KVM_ARM_VCPU_SVE) was issued
}

# struct kvm_regs minus the FP/SIMD part (KVM_REG_ARM_CORE).
struct Core {
  x @0 :List(UInt64);              # X0..X30
  spEl0 @1 :UInt64;                # regs.sp
  pc @2 :UInt64;
  pstate @3 :UInt64;
  spEl1 @4 :UInt64;
  elrEl1 @5 :UInt64;
  spsr @6 :List(UInt64);           # SPSR_EL1, SPSR_ABT, SPSR_UND, SPSR_IRQ, SPSR_FIQ
}

# struct user_fpsimd_state. Each V register is its 16 bytes, least
# significant first.
struct Fp {
  v @0 :List(Data);                # V0..V31
  fpsr @1 :UInt32;
  fpcr @2 :UInt32;
}

# SVE (KVM_REG_ARM64_SVE), slice 0 only (KVM exposes one slice up to 2048-bit
# vectors). Z, P and FFR are the kernel's bytes: vector element 0 first,
# independent of the host's byte order.
struct Sve {
  vls @0 :List(UInt64);            # KVM_REG_ARM64_SVE_VLS, 8 words; bit (vq-1) set: vector length vq*128 supported
  z @1 :List(Data);                # Z0..Z31, 256 bytes each
  p @2 :List(Data);                # P0..P15, 32 bytes each
  ffr @3 :Data;                    # 32 bytes
}

struct SysReg {
  id @0 :UInt64;
  value @1 :UInt64;
}

struct OneReg {
  id @0 :UInt64;
  data @1 :Data;                   # size from the id's size field
}

# The generic timers (KVM_REG_ARM_TIMER_* and, where listed, _PTIMER_*).
struct Timer {
  ctl @0 :UInt64;                  # CNTV_CTL_EL0
  cnt @1 :UInt64 $Common.volatile; # the guest's virtual count (CNTVCT_EL0)
  cval @2 :UInt64;                 # CNTV_CVAL_EL0
  hasPtimer @3 :Bool;
  pctl @4 :UInt64;                 # CNTP_CTL_EL0
  pcnt @5 :UInt64 $Common.volatile;
  pcval @6 :UInt64;                # CNTP_CVAL_EL0
}

# struct kvm_vcpu_events (arm64): a pending SError and its syndrome.
struct Events {
  serrorPending @0 :Bool;
  serrorHasEsr @1 :Bool;
  serrorEsr @2 :UInt64;
}

struct Vm {
  gic @0 :Gic;
  its @1 :Its;
  hasCounterOffset @2 :Bool;       # KVM_ARM_SET_COUNTER_OFFSET was used on the source
  counterOffset @3 :UInt64 $Common.volatile;
}

# The in-kernel GICv3 (KVM_DEV_TYPE_ARM_VGIC_V3). Registers are 32-bit for
# the distributor and redistributors (a 64-bit register is two halves at
# offset and offset+4), 64-bit for the CPU interface system registers.
struct Gic {
  present @0 :Bool;
  distBase @1 :UInt64;             # KVM_VGIC_V3_ADDR_TYPE_DIST
  redistBase @2 :UInt64;           # KVM_VGIC_V3_ADDR_TYPE_REDIST
  nrIrqs @3 :UInt32 $Common.decimal; # KVM_DEV_ARM_VGIC_GRP_NR_IRQS: SPIs + 32
  dist @4 :List(GicReg);           # KVM_DEV_ARM_VGIC_GRP_DIST_REGS
  cpus @5 :List(GicCpu);           # one per vCPU, by vCPU index
  pendingTablesSaved @6 :Bool;     # KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES ran before memory was saved
}

struct GicReg {
  offset @0 :UInt32;
  value @1 :UInt32;
}

struct GicCpu {
  mpidr @0 :UInt64;                # the vCPU's MPIDR_EL1 affinity, which names it in attributes
  redist @1 :List(GicReg);         # KVM_DEV_ARM_VGIC_GRP_REDIST_REGS (RD_base and SGI_base frames)
  sysregs @2 :List(SysReg);        # KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS, ICC_* by sysreg encoding
  # KVM_DEV_ARM_VGIC_GRP_LEVEL_INFO line levels; the SPIs' are held by vCPU 0.
  levels @3 :List(GicLevel);
}

struct GicLevel {
  intid @0 :UInt32 $Common.decimal; # first INTID of the 32 (a multiple of 32)
  bits @1 :UInt32;
}

# The ITS (KVM_DEV_TYPE_ARM_VGIC_ITS). Its tables live in guest memory,
# written there by KVM_DEV_ARM_ITS_SAVE_TABLES before the memory was saved.
struct Its {
  present @0 :Bool;
  base @1 :UInt64;                 # KVM_VGIC_ITS_ADDR_TYPE
  regs @2 :List(ItsReg);           # KVM_DEV_ARM_VGIC_GRP_ITS_REGS
  tablesSaved @3 :Bool;
}

struct ItsReg {
  offset @0 :UInt32;
  value @1 :UInt64;
}
