# SPDX-License-Identifier: MIT
# s390x vCPU and VM state: registers a resume needs, CMMA values and storage keys.
# Field names follow arch/s390/include/uapi/asm/kvm.h.
@0xe13049662817a652;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("vmsnap::schema::s390");
using Common = import "common.capnp";

struct Vcpu {
  mpState @0 :UInt32;              # KVM_MP_STATE_STOPPED (5), _CHECK_STOP (6), _OPERATING (7), _LOAD (8)
  gprs @1 :List(UInt64);           # 16
  acrs @2 :List(UInt32);           # 16 access registers
  crs @3 :List(UInt64);            # 16 control registers
  fprs @4 :List(UInt64);           # 16 floating-point registers
  fpc @5 :UInt32;
  pswMask @6 :UInt64;
  pswAddr @7 :UInt64;
  prefix @8 :UInt32;
  cpuTimer @9 :UInt64;
  clockComparator @10 :UInt64;
  todpr @11 :UInt32;
  pp @12 :UInt64;
  gbea @13 :UInt64;
}

struct Vm {
  cmmaEnabled @0 :Bool;            # KVM_S390_VM_MEM_ENABLE_CMMA was set
  cmma @1 :List(CmmaRun);          # sorted by startGfn; only pages whose value is known
  skeysUsed @2 :Bool;              # false: KVM_S390_GET_SKEYS returned KVM_S390_GET_SKEYS_NONE
  skeys @3 :List(SkeyRun);         # sorted by startGfn
  todHigh @4 :UInt8;               # TOD clock epoch index
  todLow @5 :UInt64 $Common.volatile;
}

# A run of consecutive guest frames and their CMMA values, one byte per page, as
# KVM_S390_GET_CMMA_BITS returns them (bits 0-1 usage state: 0 stable, 1 unused,
# 2 potentially volatile, 3 volatile; 0x40 "NODAT", as the kernel keeps
# (pgste >> 24) & 0x43; inspect decodes).
struct CmmaRun {
  startGfn @0 :UInt64;
  values @1 :Data;
}

# A run of consecutive guest frames and their storage keys, one byte per page
# (ACC bits 0-3, F bit 4, R bit 5, C bit 6 in the byte's high-to-low order,
# i.e. acc = key >> 4, fetch = key & 8, ref = key & 4, change = key & 2).
struct SkeyRun {
  startGfn @0 :UInt64;
  keys @1 :Data;
}
