# SPDX-License-Identifier: MIT
# timer: 2 vCPUs. vCPU 1 arms its LAPIC timer (one-shot, ~300 ms) and halts
# with hlt; vCPU 0 rings the doorbell while vCPU 1 is halted, so a snapshot
# holds a HALTED vCPU with a pending timer. After the doorbell (or a load),
# the timer interrupt wakes vCPU 1. Exits 43.
        .include "common.inc"
        .set TIMER_VECTOR, 0x40
        .text
        .globl _start
_start:
        test %rdi, %rdi
        jnz cpu1

cpu0:   PUTS hello
1:      pause
        cmpl $1, armed(%rip)
        jne 1b
        # Let vCPU 1 reach its hlt.
        mov $2000, %rcx
2:      pause
        dec %rcx
        jnz 2b
        PUTS ring
        DOORBELL
        PUTS after0
        movl $1, printed(%rip)
3:      pause
        cmpl $1, woken(%rip)
        jne 3b
        PUTS done
        EXIT 43

cpu1:   mov $TIMER_VECTOR, %rdi
        lea timer_isr(%rip), %rsi
        call set_gate
        call load_idt
        mov $LAPIC, %rbx
        movl $0x1ff, 0xf0(%rbx)          # software-enable, spurious vector 0xff
        movl $0xb, 0x3e0(%rbx)           # divide by 1
        movl $TIMER_VECTOR, 0x320(%rbx)  # one-shot, unmasked
        movl $300000000, 0x380(%rbx)     # initial count: ~300 ms at KVM's 1 GHz bus
        movl $1, armed(%rip)
        sti
        hlt
        cli
        # Print only once vCPU 0 has printed, so the output order is fixed.
4:      pause
        cmpl $1, printed(%rip)
        jne 4b
        cmpl $1, ticks(%rip)
        jne badtick
        PUTS woke1
        movl $1, woken(%rip)
5:      hlt
        jmp 5b
badtick:
        PUTS bad
        EXIT 2

timer_isr:
        push %rax
        incl ticks(%rip)
        mov $LAPIC, %rax
        movl $0, 0xb0(%rax)   # EOI
        pop %rax
        iretq

        .data
armed:   .long 0
printed: .long 0
woken:   .long 0
ticks:   .long 0
hello:  .asciz "timer: vCPU 1 arms its LAPIC timer and halts\n"
ring:   .asciz "DOORBELL\n"
after0: .asciz "timer: vCPU 0 after doorbell\n"
woke1:  .asciz "timer: vCPU 1 woken by its LAPIC timer\n"
done:   .asciz "timer: done\n"
bad:    .asciz "timer: vCPU 1 woke without its timer\n"
