# SPDX-License-Identifier: MIT
# genid: prints the generation ID (docs/guest-abi.md, "Generation ID")
# before and after a doorbell, so a test sees that every load gives a clone
# a fresh one, then rings the doorbell again (a snapshot of the clone, whose
# lineage a test inspects). Exits 42. The ID is printed as two 64-bit
# numbers in hex: the little-endian qwords at 0x1f00 and 0x1f08.
        .include "common.inc"
        .set GENID, 0x1f00
        .text
        .globl _start
_start:
        PUTS before
        call putid
        DOORBELL
        PUTS after
        call putid
        DOORBELL
        EXIT 42

putid:  mov GENID, %rax
        call puthex
        mov GENID+8, %rax
        call puthex
        PUTS nl
        ret

        .data
before: .asciz "genid before: "
after:  .asciz "DOORBELL\ngenid after: "
nl:     .asciz "\n"
