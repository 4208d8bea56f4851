# SPDX-License-Identifier: MIT
# The .vmsnap manifest: one Cap'n Proto message at the end of every snapshot file.
# See ../docs/format.md for where it sits in the file and how it is checked.
#
# Rules for changing this file (docs/format.md, "Versioning"):
# - new fields get the next ordinal and a default that means "absent";
#   that is a minor version bump;
# - never renumber, retype or remove a field; that would be a major bump.
# - Guest memory never lives in this message: `chunks` indexes it.

@0xfed0abd4162048e1;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("vmsnap::schema");

using Common = import "common.capnp";
using X86 = import "x86_64.capnp";
using S390 = import "s390x.capnp";
using Ppc = import "ppc64.capnp";
using Arm = import "aarch64.capnp";

enum Arch {
  x8664 @0;
  s390x @1;
  ppc64 @2;
  aarch64 @3;   # format 1.1
}

struct Manifest {
  formatMajor @0 :UInt16;   # repeats the header, so the manifest stands alone
  formatMinor @1 :UInt16;
  arch @2 :Arch;
  created @3 :Creation;
  parent @4 :ParentRef;     # null (not set) for a full snapshot
  memory @5 :MemoryMap;
  chunks @6 :List(Chunk);   # sorted by guestPhysAddr, non-overlapping
  vcpus @7 :List(Vcpu);     # by vCPU index
  vm @8 :VmState;
  devices @9 :List(DeviceState);
  save @10 :SaveStats;
}

struct Creation {
  toolVersion @0 :Text;
  hostKernel @1 :Text;      # uname -r
  hostCpu @2 :Text;         # /proc/cpuinfo "model name"
  hostName @3 :Text;
  timeUnixNs @4 :Int64 $Common.decimal;
}

# How the snapshot was taken; informational.
struct SaveStats {
  live @0 :Bool;
  rounds @1 :UInt32 $Common.decimal;     # memory copy rounds (1 for a stopped save)
  pauseNs @2 :UInt64 $Common.decimal;    # how long the vCPUs were paused
  durationNs @3 :UInt64 $Common.decimal;
  compression @4 :Text;           # "zstd:3", "none"
}

# The parent of an incremental snapshot. The parent is identified by content:
# `snapshotId` is the parent's snapshot id (XXH3-128 of its manifest bytes,
# which covers every chunk checksum, so it pins the parent's whole content).
# `path` is where the parent was when the child was written, relative to the
# child's directory when it was given relative; it is only a hint.
struct ParentRef {
  snapshotId @0 :Data;      # 16 bytes
  path @1 :Text;
  depth @2 :UInt32 $Common.decimal;  # 1 for a child of a full snapshot
}

struct MemoryMap {
  pageSize @0 :UInt32 $Common.decimal;        # 4096 on x86_64 and s390x; 4096 or 65536 on ppc64; 4096, 16384 or 65536 on aarch64
  regions @1 :List(MemoryRegion);
}

struct MemoryRegion {
  slot @0 :UInt32 $Common.decimal;            # KVM memory slot id (as_id << 16 | id)
  guestPhysAddr @1 :UInt64;
  size @2 :UInt64 $Common.decimal;
  flags @3 :UInt32;                    # KVM_MEM_* flags the slot had
  name @4 :Text;
}

enum Compression {
  none @0;      # stored pages raw, chunk starts page-aligned (mappable)
  zstd @1;      # one zstd frame holding the stored pages back to back
}

# A chunk covers `pageCount` pages starting at `guestPhysAddr`. A page in that
# range is defined by this snapshot when its bit in `definedBitmap` is set (an
# empty `definedBitmap` means every page in the range is defined); a defined
# page is stored (its bit set in `presentBitmap`) or zero (its bit clear).
# Pages that no chunk defines are zero in a full snapshot and inherited from
# the parent in an incremental one. Bitmaps: bit i is byte i/8, bit i%8 (LSB
# first); their length is ceil(pageCount/8) bytes.
struct Chunk {
  guestPhysAddr @0 :UInt64;
  pageCount @1 :UInt32 $Common.decimal;
  presentBitmap @2 :Data;          # bit i set: page i is stored
  fileOffset @3 :UInt64 $Common.decimal;
  storedLength @4 :UInt64 $Common.decimal;  # bytes in the file
  rawLength @5 :UInt64 $Common.decimal;     # stored pages * pageSize
  compression @6 :Compression;
  checksum @7 :UInt64;             # XXH3-64 of the stored bytes (seed 0)
  rawChecksum @8 :UInt64;          # XXH3-64 of the raw stored pages, after decompression
  definedBitmap @9 :Data;          # empty: all pages of the range defined
}

struct Vcpu {
  id @0 :UInt32 $Common.decimal;
  union {
    x8664 @1 :X86.Vcpu;
    s390x @2 :S390.Vcpu;
    ppc64 @3 :Ppc.Vcpu;
    aarch64 @4 :Arm.Vcpu;  # format 1.1
  }
}

struct VmState {
  union {
    none @0 :Void;
    x8664 @1 :X86.Vm;
    s390x @2 :S390.Vm;
    ppc64 @3 :Ppc.Vm;
    aarch64 @4 :Arm.Vm;    # format 1.1
  }
}

# Opaque state of a device emulated by the VMM that embeds the library.
struct DeviceState {
  name @0 :Text;
  version @1 :UInt32 $Common.decimal;
  data @2 :Data;
}
