# SPDX-License-Identifier: MIT
# Incremental-snapshot test guest: 512 data pages at 2 MiB. Round 0 writes
# every data page (so the page tables' accessed/dirty bits are set before the
# first doorbell), then rounds 1..4 each write the pages p with
# p % (round + 2) == 0, each followed by a doorbell: five doorbells in all.
# After the fifth it prints a hash of the data area and exits 0.
        .include "stackless.inc"
        .set DATA, 0x200000
        .set NPAGES, 512

        .text
        .globl _start
        jmp _start
_start:
        mov $DATA, %rdi
        mov $NPAGES, %rcx
1:      movq $1, (%rdi)
        add $4096, %rdi
        dec %rcx
        jnz 1b
        PRINT msg_start
        DOORBELL

        mov $1, %r12                    # round
round:
        lea 2(%r12), %r13               # modulus = round + 2
        xor %r8, %r8                    # page
page:
        mov %r8, %rax
        xor %rdx, %rdx
        div %r13
        test %rdx, %rdx
        jnz next
        mov %r8, %r9
        shl $12, %r9
        add $DATA, %r9
        mov %r12, %rax
        shl $32, %rax
        or %r8, %rax
        mov %rax, (%r9,%r12,8)          # marker (round << 32 | page) at offset 8*round
next:
        inc %r8
        cmp $NPAGES, %r8
        jb page
        PRINT msg_round
        mov %r12, %r14
        PRINTHEX %r14
        NEWLINE
        DOORBELL
        inc %r12
        cmp $5, %r12
        jb round

        # Hash of the data area: h = h * 31 + q over every qword.
        mov $DATA, %rdi
        mov $(NPAGES * 512), %rcx
        xor %r14, %r14
2:      imul $31, %r14, %r14
        add (%rdi), %r14
        add $8, %rdi
        dec %rcx
        jnz 2b
        PRINT msg_hash
        PRINTHEX %r14
        NEWLINE
        EXIT 0

msg_start: .asciz "start\n"
msg_round: .asciz "round "
msg_hash:  .asciz "hash "
