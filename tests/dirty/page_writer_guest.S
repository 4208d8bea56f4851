# SPDX-License-Identifier: MIT
// Test guest for the dirty-tracking tests' own minimal VM (mini_vm.h): 32-bit
// flat protected mode, integer only. Walks a table of 32-bit words at guest
// 0x2000: a page number means "increment the first dword of that page";
// 0xFFFFFFFF rings the doorbell (out to port 0xF5); 0xFFFFFFFE exits (port 0xF4);
// 0xFFFFFFFD starts the table again (a guest that never ends by itself).
// Linked into the test binary as data and copied to guest 0x1000.
  .section .rodata.dirty_guest, "a"
  .globl vmsnap_dirty_guest_start
  .globl vmsnap_dirty_guest_end
  .code32
vmsnap_dirty_guest_start:
  mov $0x2000, %esi
1:
  mov (%esi), %eax
  add $4, %esi
  cmp $0xFFFFFFFF, %eax
  je 2f
  cmp $0xFFFFFFFE, %eax
  je 3f
  cmp $0xFFFFFFFD, %eax
  je vmsnap_dirty_guest_start
  shl $12, %eax
  incl (%eax)
  jmp 1b
2:
  out %al, $0xF5
  jmp 1b
3:
  out %al, $0xF4
  hlt
  jmp 3b
vmsnap_dirty_guest_end:
  .code64
  .section .note.GNU-stack, "", @progbits
