# spin: runs ~1 s on PIT ticks (100 Hz through the PIC), printing a line
# every 10 ticks, so there is time to save it through the control socket
# while it runs. Exits 46.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $0x20, %rdi
        lea pit_isr(%rip), %rsi
        call set_gate
        call load_idt
        mov $LAPIC, %rbx
        movl $0x1ff, 0xf0(%rbx)
        movl $0x700, 0x350(%rbx)
        .macro OUTB port, val
        mov $\val, %al
        out %al, $\port
        .endm
        OUTB 0x20, 0x11
        OUTB 0xa0, 0x11
        OUTB 0x21, 0x20
        OUTB 0xa1, 0x28
        OUTB 0x21, 0x04
        OUTB 0xa1, 0x02
        OUTB 0x21, 0x01
        OUTB 0xa1, 0x01
        OUTB 0x21, 0xfe
        OUTB 0xa1, 0xff
        OUTB 0x43, 0x34
        OUTB 0x40, 0x9c
        OUTB 0x40, 0x2e
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
