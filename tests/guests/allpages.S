# SPDX-License-Identifier: MIT
# allpages: reads every page of its RAM after a snapshot and checks it holds
# what it held before. It writes a pseudo-random qword at offset 2048 of two
# pages in three from 4 MiB to the end of RAM (the third stays zero), sums
# the qword at offset 2048 of every page from 0 to the end of RAM, rings the
# doorbell, then sums again: "allpages: ok" and exit 0 when the sums agree,
# "allpages: BAD" and exit 1 when they do not. Loaded from the doorbell's
# snapshot, the second sum reads every page through the loader, so a wrong or
# missing page shows. Offset 2048 holds nothing that changes on its own: no
# page-table entry in use (RAM is far below 512 GiB and 512 MiB), no stack
# slot the guest pushes to.
        .include "common.inc"
        .set START, 0x400000
        .set PROBE, 2048

        # SUM: %rax = sum over pages [0, %r12) of the qword at PROBE, without
        # touching the stack. Clobbers %rdi.
        .macro SUM
        xor %rax, %rax
        xor %rdi, %rdi
.Ls\@:  add PROBE(%rdi), %rax
        add $4096, %rdi
        cmp %r12, %rdi
        jb .Ls\@
        .endm

        .text
        .globl _start
_start:
        mov %rdx, %r12                  # RAM size (one region: keep it below 3 GiB)
        mov $0x2545F4914F6CDD1D, %r14   # LCG state
        mov $6364136223846793005, %r10
        mov $1442695040888963407, %r11
        mov $START, %rdi
        xor %rcx, %rcx                  # page counter, mod 3
1:      cmp %r12, %rdi
        jae 3f
        inc %rcx
        cmp $3, %rcx
        jne 2f
        xor %rcx, %rcx
        add $4096, %rdi                 # every third page stays zero
        jmp 1b
2:      imul %r10, %r14
        add %r11, %r14
        mov %r14, PROBE(%rdi)
        add $4096, %rdi
        jmp 1b
3:      SUM
        mov %rax, %r15
        DOORBELL
        SUM
        cmp %rax, %r15
        jne 4f
        PUTS ok
        EXIT 0
4:      PUTS bad
        EXIT 1

        .data
ok:     .asciz "allpages: ok\n"
bad:    .asciz "allpages: BAD\n"
