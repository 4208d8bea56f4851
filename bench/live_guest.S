# SPDX-License-Identifier: MIT
/* Live-save benchmark guest (bench/bench.py): prints a newline (started),
   then rewrites, forever, the first 8 bytes of every page of the 64 MiB from
   512 MiB up with what they already hold: each page is dirtied again and
   again while `save --live` copies memory, yet the memory image the guest
   runs on (mapped shared from a file) keeps its contents. */
    .code64
    .text
    .globl _start
_start:
    mov $0x3f8, %dx
    mov $'\n', %al
    out %al, (%dx)
1:  mov $0x20000000, %rdi
    mov $16384, %ecx
2:  mov (%rdi), %rax
    mov %rax, (%rdi)
    add $4096, %rdi
    dec %ecx
    jnz 2b
    jmp 1b
