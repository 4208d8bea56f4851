# Live-snapshot test guest: keeps rewriting random qwords of an 8 MiB data
# area at 2 MiB and keeps the running sum of all its qwords in %r15. After
# every 4096 rewrites it re-sums the whole area and compares: "verified N"
# when it holds, "BAD" and exit 1 when it does not. A snapshot that missed a
# rewrite makes the first check after load fail.
        .include "stackless.inc"
        .set DATA, 0x200000
        .set NPAGES, 2048

        .text
        .globl _start
        jmp _start
_start:
        # Fill with an LCG and sum.
        mov $0x2545F4914F6CDD1D, %r14
        mov $6364136223846793005, %r10
        mov $1442695040888963407, %r11
        mov $DATA, %rdi
        mov $(NPAGES * 512), %rcx
        xor %r15, %r15
1:      imul %r10, %r14
        add %r11, %r14
        mov %r14, (%rdi)
        add %r14, %r15
        add $8, %rdi
        dec %rcx
        jnz 1b
        xor %r13, %r13                  # verifications
loop:
        mov $4096, %r12
2:      imul %r10, %r14
        add %r11, %r14
        mov %r14, %rax
        shr $33, %rax
        and $(NPAGES - 1), %rax
        shl $12, %rax
        mov %r14, %rbx
        shr $20, %rbx
        and $511, %rbx
        lea DATA(%rax,%rbx,8), %rdi
        mov (%rdi), %rax
        sub %rax, %r15
        mov %r14, (%rdi)
        add %r14, %r15
        dec %r12
        jnz 2b
        # Verify.
        mov $DATA, %rdi
        mov $(NPAGES * 512), %rcx
        xor %r9, %r9
3:      add (%rdi), %r9
        add $8, %rdi
        dec %rcx
        jnz 3b
        cmp %r9, %r15
        jne bad
        inc %r13
        PRINT msg_ok
        PRINTHEX %r13
        NEWLINE
        jmp loop
bad:
        PRINT msg_bad
        EXIT 1

msg_ok:  .asciz "verified "
msg_bad: .asciz "BAD\n"
