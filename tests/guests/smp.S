# SPDX-License-Identifier: MIT
# smp: every vCPU (2-4) computes its own series, holding its running value
# in r12/r13 across the doorbell snapshot; vCPU 0 prints every result at
# the end. Exits 45.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov %rsi, %r15              # vCPU count
        mov %rdi, %r14              # own index
        lea 1(%rdi), %r12
        shl $12, %r12               # seed (i+1) * 0x1000
        mov %rdi, %r13
        mov $1000, %rcx
1:      lea (%r12,%r12,2), %r12     # r12 = r12 * 3 + i
        add %r13, %r12
        dec %rcx
        jnz 1b
        lock incl arrived1(%rip)
        test %r14, %r14
        jnz wait_go
        PUTS hello
2:      pause
        cmp arrived1(%rip), %r15d
        jne 2b
        PUTS ring
        DOORBELL
        PUTS after
        movl $1, go(%rip)
        jmp phase2
wait_go:
        pause
        cmpl $1, go(%rip)
        jne wait_go
phase2: mov $1000, %rcx
3:      xor %r13, %r12              # r12 = (r12 ^ i) * 5 + 7
        lea (%r12,%r12,4), %r12
        add $7, %r12
        dec %rcx
        jnz 3b
        lea results(%rip), %rax
        mov %r12, (%rax,%r14,8)
        lock incl arrived2(%rip)
        test %r14, %r14
        jnz park
4:      pause
        cmp arrived2(%rip), %r15d
        jne 4b
        xor %rbx, %rbx
5:      PUTS cpu
        mov %rbx, %rax
        call puthex
        PUTS colon
        lea results(%rip), %rax
        mov (%rax,%rbx,8), %rax
        call puthex
        PUTS nl
        inc %rbx
        cmp %r15, %rbx
        jne 5b
        EXIT 45
park:   cli
        hlt
        jmp park

        .data
        .balign 8
results: .quad 0, 0, 0, 0, 0, 0, 0, 0
arrived1: .long 0
arrived2: .long 0
go:     .long 0
hello:  .asciz "smp: every vCPU finished phase 1\n"
ring:   .asciz "DOORBELL\n"
after:  .asciz "smp: after doorbell\n"
cpu:    .asciz "smp: vCPU "
colon:  .asciz " result "
nl:     .asciz "\n"
