# SPDX-License-Identifier: MIT
# paging: builds its own page tables mapping chosen virtual addresses with a
# 4 KiB, a 2 MiB and a 1 GiB page, writes known bytes through each mapping,
# rings the doorbell (a snapshot is taken) and exits 0. The forensics test then
# reads those bytes back with `vmsnap read --gva` on the snapshot.
# Run with one vCPU. Integer code only.
        .include "common.inc"

        .set GVA_4K, 0x00007f1234567000
        .set GVA_2M, 0x0000555540000000
        .set GVA_1G, 0xffff888000000000
        .set PHYS_2M, 0x800000          # 2 MiB-aligned frame in RAM, unused by the image
        .set OFF_2M, 0x1234
        .set OFF_1G, 0xc00000           # the 1 GiB page maps physical 0; this lands at 12 MiB
        .set PTE_RW, 0x3                # present, writable
        .set PTE_LARGE, 0x83            # present, writable, page size

        .text
        .globl _start
_start:
        # Our PML4 starts as a copy of the VMM's, so the identity map of code,
        # stack and data stays in place when CR3 switches.
        mov %cr3, %rsi
        and $~0xfff, %rsi
        lea pml4(%rip), %rdi
        mov $512, %ecx
        rep movsq

        # 4 KiB page: PML4 -> PDPT -> PD -> PT -> page4k.
        lea pdpt_4k(%rip), %rax
        or $PTE_RW, %rax
        mov %rax, pml4 + 8 * ((GVA_4K >> 39) & 511)(%rip)
        lea pd_4k(%rip), %rax
        or $PTE_RW, %rax
        mov %rax, pdpt_4k + 8 * ((GVA_4K >> 30) & 511)(%rip)
        lea pt_4k(%rip), %rax
        or $PTE_RW, %rax
        mov %rax, pd_4k + 8 * ((GVA_4K >> 21) & 511)(%rip)
        lea page4k(%rip), %rax
        or $PTE_RW, %rax
        mov %rax, pt_4k + 8 * ((GVA_4K >> 12) & 511)(%rip)

        # 2 MiB page: PML4 -> PDPT -> PD entry with PS.
        lea pdpt_2m(%rip), %rax
        or $PTE_RW, %rax
        mov %rax, pml4 + 8 * ((GVA_2M >> 39) & 511)(%rip)
        lea pd_2m(%rip), %rax
        or $PTE_RW, %rax
        mov %rax, pdpt_2m + 8 * ((GVA_2M >> 30) & 511)(%rip)
        mov $(PHYS_2M | PTE_LARGE), %rax
        mov %rax, pd_2m + 8 * ((GVA_2M >> 21) & 511)(%rip)

        # 1 GiB page: PML4 -> PDPT entry with PS, mapping physical 0. Only
        # when the vCPU has 1 GiB pages (CPUID 0x80000001 EDX bit 26): KVM
        # withholds them without two-dimensional paging, and the PS bit would
        # then be reserved (a page fault, and with no IDT a triple fault).
        mov $0x80000001, %eax
        cpuid
        bt $26, %edx
        setc have_1g(%rip)
        jnc 1f
        lea pdpt_1g(%rip), %rax
        or $PTE_RW, %rax
        mov %rax, pml4 + 8 * ((GVA_1G >> 39) & 511)(%rip)
        mov $PTE_LARGE, %rax
        mov %rax, pdpt_1g + 8 * ((GVA_1G >> 30) & 511)(%rip)
1:

        lea pml4(%rip), %rax
        mov %rax, %cr3

        # Known bytes, written through the new virtual addresses.
        movabs $GVA_4K, %rdi
        lea msg4k(%rip), %rsi
        mov $(msg4k_end - msg4k), %ecx
        rep movsb
        movabs $(GVA_2M + OFF_2M), %rdi
        lea msg2m(%rip), %rsi
        mov $(msg2m_end - msg2m), %ecx
        rep movsb
        cmpb $0, have_1g(%rip)
        je 2f
        movabs $(GVA_1G + OFF_1G), %rdi
        lea msg1g(%rip), %rsi
        mov $(msg1g_end - msg1g), %ecx
        rep movsb
        PUTS mapped1g
2:
        PUTS mapped
        mov $0x5eed5eed5eed5eed, %rbx    # a register the test finds in the ELF core
        DOORBELL
        EXIT 0

        .data
mapped: .asciz "PAGES MAPPED\n"
mapped1g: .asciz "1 GIB PAGE MAPPED\n"
have_1g: .byte 0
msg4k:  .ascii "written through a 4 KiB page"
msg4k_end:
msg2m:  .ascii "written through a 2 MiB page"
msg2m_end:
msg1g:  .ascii "written through a 1 GiB page"
msg1g_end:

        .bss
        .balign 4096
pml4:    .skip 4096
pdpt_4k: .skip 4096
pd_4k:   .skip 4096
pt_4k:   .skip 4096
pdpt_2m: .skip 4096
pd_2m:   .skip 4096
pdpt_1g: .skip 4096
page4k:  .skip 4096
