# SPDX-License-Identifier: MIT
/* Benchmark guest: a flat binary (loaded at 0x100000, entered in long mode,
   docs/guest-abi.md) that writes '\n' to the serial port forever. Wherever a
   save stops it, the first or second instruction after a load is the `out`,
   so the first serial byte of `vmsnap load` marks the first guest instruction
   (a newline, because the VMM flushes serial output at each newline). */
    .code64
    .text
    .globl _start
_start:
    mov $0x3f8, %dx
    mov $'\n', %al
1:  out %al, (%dx)
    jmp 1b
