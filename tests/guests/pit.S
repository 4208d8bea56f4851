# SPDX-License-Identifier: MIT
# pit: the PIT (channel 0, 100 Hz) interrupts through the PIC (IRQ0 ->
# vector 0x20, LAPIC LINT0 as ExtINT). The doorbell rings after 5 ticks;
# ticks keep coming after it (and after a load). Exits 44 after 10 ticks.
        .include "common.inc"
        .text
        .globl _start
_start:
        PIT_IRQ0 pit_isr
        PUTS hello
        sti
1:      hlt
        cmpl $5, ticks(%rip)
        jb 1b
        cmpl $0, rang(%rip)
        jne 2f
        movl $1, rang(%rip)
        cli
        PUTS five
        DOORBELL
        PUTS after
        sti
2:      cmpl $10, ticks(%rip)
        jb 1b
        cli
        PUTS ten
        EXIT 44

pit_isr:
        push %rax
        incl ticks(%rip)
        mov $0x20, %al
        out %al, $0x20              # EOI to the master PIC
        pop %rax
        iretq

        .data
ticks:  .long 0
rang:   .long 0
hello:  .asciz "pit: programmed PIC and PIT\n"
five:   .asciz "pit: 5 ticks\nDOORBELL\n"
after:  .asciz "pit: after doorbell\n"
ten:    .asciz "pit: 10 ticks\n"
