# SPDX-License-Identifier: MIT
# spin: runs ~1 s on PIT ticks (100 Hz through the PIC), printing a line
# every 10 ticks, so there is time to save it through the control socket
# while it runs. Exits 46.
        .include "common.inc"
        .text
        .globl _start
_start:
        PIT_IRQ0 pit_isr
        PUTS hello
        xor %r12, %r12              # lines printed
        sti
1:      hlt
        mov ticks(%rip), %eax
        xor %edx, %edx
        mov $10, %ecx
        div %ecx
        cmp %r12d, %eax
        jbe 1b
        mov %eax, %r12d
        PUTS line
        mov %r12, %rax
        call puthex
        PUTS nl
        cmp $10, %r12
        jb 1b
        cli
        PUTS done
        EXIT 46

pit_isr:
        push %rax
        incl ticks(%rip)
        mov $0x20, %al
        out %al, $0x20
        pop %rax
        iretq

        .data
ticks:  .long 0
hello:  .asciz "spin: start\n"
line:   .asciz "spin: tick group "
nl:     .asciz "\n"
done:   .asciz "spin: done\n"
