# SPDX-License-Identifier: MIT
# Multiboot v1 stub: lets QEMU's `-kernel` boot a vmsnap test guest. QEMU enters
# it in 32-bit protected mode on the boot vCPU; it builds the long-mode entry
# state of docs/guest-abi.md (GDT at 0x1000, identity-mapped 4 GiB from 0x2000)
# and jumps to the guest, which the build links in as a flat image at 0x100000.
        .set MB_MAGIC, 0x1badb002
        .set MB_FLAGS, 0x00000002        # ask for the memory fields
        .set GUEST, 0x100000
        .set GDT, 0x1000
        .set PML4, 0x2000
        .set PDPT, 0x3000
        .set PD, 0x4000                  # four page directories, 0x4000-0x7fff
        # The ABI's stack area 0x80000-0xfffff is read-only BIOS on QEMU's pc
        # machine above 0xa0000, so the boot vCPU's stack is put in low RAM.
        .set STACK_TOP, 0x9f000

        .section .mbstub, "awx"
        .code32
        .align 4
        .globl mb_header
mb_header:
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .globl _start
_start:
        cli
        # ebx: multiboot info; RAM size = 1 MiB + mem_upper KiB (a lower bound
        # when RAM has a hole; the test guests use it only to size their work).
        mov 8(%ebx), %eax
        add $1024, %eax
        shl $10, %eax
        mov %eax, %ebp

        # GDT: null, 0x08 64-bit code, 0x10 data.
        movl $0, GDT
        movl $0, GDT+4
        movl $0x0000ffff, GDT+8
        movl $0x00af9a00, GDT+12
        movl $0x0000ffff, GDT+16
        movl $0x00cf9200, GDT+20

        # Page tables: clear 0x2000-0x7fff, then PML4[0] -> PDPT, PDPT[i] -> PD i,
        # each PD 512 2 MiB pages.
        mov $PML4, %edi
        mov $(0x6000 / 4), %ecx
        xor %eax, %eax
        rep stosl
        movl $(PDPT | 3), PML4
        xor %ecx, %ecx
1:      mov %ecx, %eax
        shl $12, %eax
        add $(PD | 3), %eax
        mov %eax, PDPT(,%ecx,8)
        inc %ecx
        cmp $4, %ecx
        jb 1b
        xor %ecx, %ecx                   # 2048 entries cover 4 GiB
2:      mov %ecx, %eax
        shl $21, %eax
        or $0x83, %eax                   # present, writable, 2 MiB
        mov %eax, PD(,%ecx,8)
        mov %ecx, %eax
        shr $11, %eax                    # high half of the address
        mov %eax, PD+4(,%ecx,8)
        inc %ecx
        cmp $2048, %ecx
        jb 2b

        lgdt gdtr
        mov $0x20, %eax                  # CR4.PAE
        mov %eax, %cr4
        mov $PML4, %eax
        mov %eax, %cr3
        mov $0xc0000080, %ecx            # EFER.LME
        rdmsr
        or $0x100, %eax
        wrmsr
        mov $0x80010031, %eax            # PE|ET|NE|WP|PG
        mov %eax, %cr0
        ljmp $0x08, $long_mode

        .code64
long_mode:
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %fs
        mov %eax, %gs
        mov %eax, %ss
        mov $STACK_TOP, %rsp
        push $2
        popfq
        xor %edi, %edi                   # vCPU 0
        mov $1, %esi                     # of one: the others wait for SIPI
        mov %ebp, %edx                   # RAM size
        xor %eax, %eax
        xor %ebx, %ebx
        xor %ecx, %ecx
        xor %ebp, %ebp
        mov $GUEST, %r8
        jmp *%r8

        .align 8
gdtr:   .word 23
        .long GDT
