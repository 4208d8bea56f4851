# SPDX-License-Identifier: MIT
/* Exit-time benchmark guest: a flat binary that rings the doorbell (the
   snapshot point) and exits 0 at once, so loading its doorbell snapshot
   measures only what a VMM does to start and to end. */
    .code64
    .text
    .globl _start
_start:
    out %al, $0xf5
    xor %eax, %eax
    out %al, $0xf4
1:  hlt
    jmp 1b
