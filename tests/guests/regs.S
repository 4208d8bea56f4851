# SPDX-License-Identifier: MIT
# regs: chosen values in GPRs, SSE registers, DR0-DR3/DR7 and guest-written
# MSRs (STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, FS/GS base, EFER.NXE)
# survive a doorbell snapshot. Built as a flat binary. Exits 42 when all match.
        .include "common.inc"
        .text
        .globl _start
_start:
        # SSE on: CR0.EM off, CR0.MP on; CR4.OSFXSR|OSXMMEXCPT.
        mov %cr0, %rax
        and $~4, %rax
        or $2, %rax
        mov %rax, %cr0
        mov %cr4, %rax
        or $0x600, %rax
        mov %rax, %cr4
        PUTS hello

        # MSRs the guest writes.
        .macro WRMSR64 msr, val
        mov $\msr, %ecx
        mov $\val, %rax
        mov %rax, %rdx
        shr $32, %rdx
        wrmsr
        .endm
        WRMSR64 0xc0000081, 0x0023001000000000   # STAR
        WRMSR64 0xc0000082, 0xffffffff81234560   # LSTAR
        WRMSR64 0xc0000083, 0xffffffff81234570   # CSTAR
        WRMSR64 0xc0000084, 0x47700              # SFMASK
        WRMSR64 0xc0000102, 0x123456789000       # KERNEL_GS_BASE
        WRMSR64 0xc0000100, 0x7f0000001000       # FS_BASE
        WRMSR64 0xc0000101, 0x7f0000002000       # GS_BASE
        mov $0xc0000080, %ecx                      # EFER.NXE
        rdmsr
        or $0x800, %eax
        wrmsr

        # Debug registers: breakpoints on addresses nothing executes.
        mov $0xdead0000, %rax
        mov %rax, %dr0
        mov $0xdead1000, %rax
        mov %rax, %dr1
        mov $0xdead2000, %rax
        mov %rax, %dr2
        mov $0xdead3000, %rax
        mov %rax, %dr3
        mov $0x455, %rax        # L0-L3 enabled (execute breakpoints), bit 10 reserved-1
        mov %rax, %dr7

        # SSE registers.
        movdqu xval0(%rip), %xmm0
        movdqu xval1(%rip), %xmm1
        movdqu xval2(%rip), %xmm7
        movdqu xval3(%rip), %xmm15

        # General registers.
        mov $0x1111111111111111, %rbx
        mov $0x2222222222222222, %rbp
        mov $0x8888888888888888, %r8
        mov $0x9999999999999999, %r9
        mov $0xaaaaaaaaaaaaaaaa, %r10
        mov $0xbbbbbbbbbbbbbbbb, %r11
        mov $0xcccccccccccccccc, %r12
        mov $0xdddddddddddddddd, %r13
        mov $0xeeeeeeeeeeeeeeee, %r14
        mov $0xffffffffffffff0f, %r15
        PUTS before
        DOORBELL
        PUTS after

        # Check everything; r9 counts failures' first index.
        mov $1, %rcx
        mov $0x1111111111111111, %rax
        cmp %rax, %rbx
        jne bad
        inc %rcx
        mov $0x2222222222222222, %rax
        cmp %rax, %rbp
        jne bad
        inc %rcx
        mov $0x8888888888888888, %rax
        cmp %rax, %r8
        jne bad
        inc %rcx
        mov $0xaaaaaaaaaaaaaaaa, %rax
        cmp %rax, %r10
        jne bad
        inc %rcx
        mov $0xffffffffffffff0f, %rax
        cmp %rax, %r15
        jne bad
        mov $0x9999999999999999, %rax
        cmp %rax, %r9
        jne bad
        mov $0xeeeeeeeeeeeeeeee, %rax
        cmp %rax, %r14
        jne bad

        mov $10, %rcx
        .macro CHECKX reg, label
        # Only moves: this host's KVM emulates guest code and its emulator
        # knows movdqu but not SSE arithmetic.
        movdqu \reg, xtmp(%rip)
        mov xtmp(%rip), %rax
        cmp \label(%rip), %rax
        jne bad
        mov xtmp+8(%rip), %rax
        cmp \label+8(%rip), %rax
        jne bad
        inc %rcx
        .endm
        CHECKX %xmm0, xval0
        CHECKX %xmm1, xval1
        CHECKX %xmm7, xval2
        CHECKX %xmm15, xval3

        mov $20, %rcx
        .macro CHECKDR dr, val
        mov \dr, %rax
        mov $\val, %rdx
        cmp %rdx, %rax
        jne bad
        inc %rcx
        .endm
        CHECKDR %dr0, 0xdead0000
        CHECKDR %dr1, 0xdead1000
        CHECKDR %dr2, 0xdead2000
        CHECKDR %dr3, 0xdead3000
        mov %dr7, %rax
        and $0xff, %rax
        cmp $0x55, %rax
        jne bad

        mov $30, %rcx
        .macro CHECKMSR msr, val
        push %rcx
        mov $\msr, %ecx
        rdmsr
        pop %rcx
        shl $32, %rdx
        or %rdx, %rax
        mov $\val, %rdx
        cmp %rdx, %rax
        jne bad
        inc %rcx
        .endm
        CHECKMSR 0xc0000081, 0x0023001000000000
        CHECKMSR 0xc0000082, 0xffffffff81234560
        CHECKMSR 0xc0000083, 0xffffffff81234570
        CHECKMSR 0xc0000084, 0x47700
        CHECKMSR 0xc0000102, 0x123456789000
        CHECKMSR 0xc0000100, 0x7f0000001000
        CHECKMSR 0xc0000101, 0x7f0000002000
        push %rcx
        mov $0xc0000080, %ecx
        rdmsr
        pop %rcx
        test $0x800, %eax
        jz bad

        PUTS ok
        EXIT 42
bad:    PUTS badmsg
        mov %rcx, %rax
        call puthex
        PUTS nl
        EXIT 1

        .data
        .balign 16
xval0:  .quad 0x0123456789abcdef, 0xfedcba9876543210
xval1:  .quad 0x1122334455667788, 0x99aabbccddeeff00
xval2:  .quad 0x7777777777777777, 0x0707070707070707
xval3:  .quad 0xdeadbeefcafef00d, 0x0badc0de8badf00d
xtmp:   .quad 0, 0
hello:  .asciz "regs: start\n"
before: .asciz "DOORBELL\n"
after:  .asciz "regs: after doorbell\n"
ok:     .asciz "regs: all registers, DRs and MSRs match\n"
badmsg: .asciz "regs: MISMATCH at check "
nl:     .asciz "\n"
