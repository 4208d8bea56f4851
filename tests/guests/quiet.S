# SPDX-License-Identifier: MIT
# quiet: rings the doorbell (a test saves it there), then halts with
# interrupts off. Loaded from that snapshot, vCPU 0 stays in KVM for as long
# as the VM is kept: it never exits to the VMM, and prints nothing.
        .include "common.inc"
        .text
        .globl _start
_start:
        DOORBELL
        cli
1:      hlt
        jmp 1b
