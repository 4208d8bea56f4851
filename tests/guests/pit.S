# pit: the PIT (channel 0, 100 Hz) interrupts through the PIC (IRQ0 ->
# vector 0x20, LAPIC LINT0 as ExtINT). The doorbell rings after 5 ticks;
# ticks keep coming after it (and after a load). Exits 44 after 10 ticks.
        .include "common.inc"
        .text
        .globl _start
_start:
        mov $0x20, %rdi
        lea pit_isr(%rip), %rsi
        call set_gate
        call load_idt
        mov $LAPIC, %rbx
        movl $0x1ff, 0xf0(%rbx)     # LAPIC on
        movl $0x700, 0x350(%rbx)    # LINT0: ExtINT, unmasked
        # PIC: ICW1-4, vectors 0x20/0x28, cascade on IRQ2, 8086 mode.
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
        OUTB 0x21, 0xfe             # only IRQ0
        OUTB 0xa1, 0xff
        # PIT channel 0, lobyte/hibyte, mode 2, 11932 -> ~100 Hz.
        OUTB 0x43, 0x34
        OUTB 0x40, 0x9c
        OUTB 0x40, 0x2e
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
