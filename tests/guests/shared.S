# SPDX-License-Identifier: MIT
# shared: fills the 16 MiB from 16 MiB up with a compressible pattern (the
# page number in every qword of each page), rings the doorbell (the snapshot
# point), then, in each VM loaded from that snapshot, reads the qword at
# offset 2048 of each of those pages, prints their sum ("sum: " and 16 hex
# digits, 00000000007ff800 when every page is right) and idles with
# interrupts off, so that a test can look at the memory of several loads at
# once and see whether they share the snapshot's pages.
        .include "common.inc"
        .set BASE, 0x1000000
        .set PAGES, 4096
        .text
        .globl _start
_start:
        mov $BASE, %rdi
        xor %rax, %rax
1:      mov $512, %ecx
        rep stosq
        inc %rax
        cmp $PAGES, %rax
        jb 1b
        DOORBELL
        mov $BASE + 2048, %rsi
        mov $PAGES, %ecx
        xor %rbx, %rbx
2:      add (%rsi), %rbx
        add $4096, %rsi
        dec %ecx
        jnz 2b
        PUTS sum
        mov %rbx, %rax
        call puthex
        PUTS nl
        cli
3:      hlt
        jmp 3b

        .data
sum:    .asciz "sum: "
nl:     .asciz "\n"
