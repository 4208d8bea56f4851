# SPDX-License-Identifier: MIT
# ppc64 (book3s HV) vCPU and VM state: registers a resume needs and the hashed page table.
# Field names follow arch/powerpc/include/uapi/asm/kvm.h.
@0xef44db90327a5af2;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("vmsnap::schema::ppc");
using Common = import "common.capnp";

struct Vcpu {
  mpState @0 :UInt32;
  # struct kvm_regs
  pc @1 :UInt64;
  cr @2 :UInt64;
  ctr @3 :UInt64;
  lr @4 :UInt64;
  xer @5 :UInt64;
  msr @6 :UInt64;
  srr0 @7 :UInt64;
  srr1 @8 :UInt64;
  pid @9 :UInt64;
  sprg @10 :List(UInt64);          # sprg0..sprg7
  gpr @11 :List(UInt64);           # 32
  # struct kvm_sregs (book3s)
  pvr @12 :UInt32;
  sdr1 @13 :UInt64;
  slb @14 :List(SlbEntry);
  # Registers read with KVM_GET_ONE_REG, by id; value holds 64-bit registers,
  # wide holds wider ones (VSX, 128 bits) in the kernel's host byte order
  # converted to little-endian on capture.
  oneRegs @15 :List(OneReg);
}

struct SlbEntry {
  esid @0 :UInt64;                 # slbe
  vsid @1 :UInt64;                 # slbv
}

struct OneReg {
  id @0 :UInt64;
  name @1 :Text;
  value @2 :UInt64;
  wide @3 :Data;
}

struct Vm {
  htab @0 :Htab;
}

# The hashed page table as read from KVM_PPC_GET_HTAB_FD. The kernel's stream
# carries each HPTE as two big-endian doublewords; `v` and `r` hold their
# numeric values (byte order resolved on capture, re-encoded big-endian on
# restore). Entries not listed are invalid.
struct Htab {
  shift @0 :UInt32 $Common.decimal;  # log2 of the HPT size in bytes (18..46)
  boltedOnly @1 :Bool;               # captured with KVM_GET_HTAB_BOLTED_ONLY
  entries @2 :List(Hpte);            # sorted by index, valid entries only
}

struct Hpte {
  index @0 :UInt32 $Common.decimal;
  v @1 :UInt64;                      # first doubleword: AVPN, B, L, H, valid, bolted
  r @2 :UInt64;                      # second doubleword: RPN, R, C, WIMG, PP
}
