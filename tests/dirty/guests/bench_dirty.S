# SPDX-License-Identifier: MIT
# Incremental-size benchmark guest: one doorbell with memory almost empty,
# then it dirties 1%, 10% and 50% of the pages from 4 MiB to the end of RAM
# (every 100th, 10th, 2nd page; 64 bytes of LCG data at the start of each),
# with a doorbell after each, and exits 0.
        .include "stackless.inc"
        .set START, 0x400000

        .text
        .globl _start
        jmp _start
_start:
        mov %rdx, %r15                  # RAM size
        DOORBELL
        mov $0x9E3779B97F4A7C15, %r14
        mov $6364136223846793005, %r10
        lea strides(%rip), %r13
        mov $3, %r9
round:
        mov (%r13), %r12                # stride in pages
        shl $12, %r12
        mov $START, %rdi
1:      mov $8, %rcx
2:      imul %r10, %r14
        inc %r14
        mov %r14, (%rdi,%rcx,8)
        dec %rcx
        jnz 2b
        mov %r14, (%rdi)
        add %r12, %rdi
        cmp %r15, %rdi
        jb 1b
        DOORBELL
        add $8, %r13
        dec %r9
        jnz round
        EXIT 0

strides: .quad 100, 10, 2
