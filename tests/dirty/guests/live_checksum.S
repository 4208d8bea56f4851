# SPDX-License-Identifier: MIT
# Live-snapshot test guest: keeps rewriting random slots (the first qword of
# each 64-byte line) of a 1 MiB data area at 2 MiB and keeps the running sum of
# all slots in %r15. After every 512 rewrites it re-sums every slot and
# compares: "verified N" when it holds, "BAD" and exit 1 when it does not. A
# snapshot that missed a rewrite makes the first check after load fail.
# (Guest code is emulated on this host, so the area is small.)
        .include "stackless.inc"
        .set DATA, 0x200000
        .set NPAGES, 256
        .set SLOTS, NPAGES * 64

        .text
        .globl _start
        jmp _start
_start:
        # Fill with an LCG and sum.
        mov $0x2545F4914F6CDD1D, %r14
        mov $6364136223846793005, %r10
        mov $1442695040888963407, %r11
        mov $DATA, %rdi
        mov $SLOTS, %rcx
        xor %r15, %r15
1:      imul %r10, %r14
        add %r11, %r14
        mov %r14, (%rdi)
        add %r14, %r15
        add $64, %rdi
        dec %rcx
        jnz 1b
        xor %r13, %r13                  # verifications
loop:
        mov $512, %r12
2:      imul %r10, %r14
        add %r11, %r14
        mov %r14, %rax
        shr $33, %rax
        and $(NPAGES - 1), %rax
        shl $12, %rax
        mov %r14, %rbx
        shr $20, %rbx
        and $63, %rbx
        shl $6, %rbx
        lea DATA(%rax,%rbx), %rdi
        mov (%rdi), %rax
        sub %rax, %r15
        mov %r14, (%rdi)
        add %r14, %r15
        dec %r12
        jnz 2b
        # Verify.
        mov $DATA, %rdi
        mov $SLOTS, %rcx
        xor %r9, %r9
3:      add (%rdi), %r9
        add $64, %rdi
        dec %rcx
        jnz 3b
        cmp %r9, %r15
        jne bad
        inc %r13
        PRINT msg_ok
        PRINTHEX %r13
        NEWLINE
        jmp loop
bad:
        PRINT msg_bad
        EXIT 1

msg_ok:  .asciz "verified "
msg_bad: .asciz "BAD\n"
