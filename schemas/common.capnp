# SPDX-License-Identifier: MIT
# Annotations shared by the vmsnap schemas.
@0x9fff64e1cbc08b08;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("vmsnap::schema");

# Marks an integer field that inspect/diff print as a decimal number (a count,
# a size, an index). Unmarked integers are register or address values, printed
# as lower-case hex strings with 0x.
annotation decimal @0xc1e3b1a2d4f50601 (field) :Void;

# Marks a Data field that holds an architectural image which inspect decodes
# (the XSAVE area, the local APIC page); the value names the decoder.
annotation decoded @0xc1e3b1a2d4f50602 (field) :Text;

# Marks a field whose value legitimately changes between a capture, a restore
# and a second capture of the same paused VM (time-based state). `vmsnap diff
# --ignore-volatile` skips them; docs/state-coverage.md lists them.
annotation volatile @0xc1e3b1a2d4f50603 (field) :Void;
