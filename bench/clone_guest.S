# SPDX-License-Identifier: MIT
/* Clone benchmark guest (bench/fleet.py): rings the doorbell (the snapshot
   point), then, in each clone, prints a newline (started), writes one byte
   in each page of the 32 MiB from 512 MiB up, prints "w\n" (written) and
   halts with interrupts off, idle for good. */
    .code64
    .text
    .globl _start
_start:
    out %al, $0xf5
    mov $0x3f8, %dx
    mov $'\n', %al
    out %al, (%dx)
    mov $0x20000000, %rdi
    mov $8192, %ecx
1:  movb $1, (%rdi)
    add $4096, %rdi
    dec %ecx
    jnz 1b
    mov $'w', %al
    out %al, (%dx)
    mov $'\n', %al
    out %al, (%dx)
    cli
2:  hlt
    jmp 2b
