#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Reads a snapshot through libvmsnap with nothing but the standard library
# (ctypes): prints vCPU 0's registers and the first bytes of guest memory at
# an address, as a Python tool embedding the C API would.
#   regs.py LIBVMSNAP.so SNAPSHOT GPA
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])
lib.vmsnap_last_error.restype = ctypes.c_char_p
lib.vmsnap_version.restype = ctypes.c_char_p


class KvmRegs(ctypes.Structure):  # struct kvm_regs (x86-64)
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
        "r12", "r13", "r14", "r15", "rip", "rflags")]


def check(rc, what):
    if rc != 0:
        sys.exit("%s: %s" % (what, lib.vmsnap_last_error().decode()))


VMSNAP_X86_REGS = 2
snap = ctypes.c_void_p()
check(lib.vmsnap_open(sys.argv[2].encode(), 0, ctypes.byref(snap)), "vmsnap_open")
count = ctypes.c_uint32()
check(lib.vmsnap_vcpu_count(snap, ctypes.byref(count)), "vmsnap_vcpu_count")
print("library", lib.vmsnap_version().decode(), "vcpus", count.value)
regs = KvmRegs()
size = ctypes.c_size_t()
check(lib.vmsnap_vcpu_state(snap, 0, VMSNAP_X86_REGS, ctypes.byref(regs), ctypes.sizeof(regs),
                            ctypes.byref(size)), "vmsnap_vcpu_state")
for name, _ in KvmRegs._fields_:
    print("%s 0x%x" % (name, getattr(regs, name)))
gpa = int(sys.argv[3], 0)
buf = ctypes.create_string_buffer(16)
check(lib.vmsnap_read_memory(snap, ctypes.c_uint64(gpa), buf, ctypes.c_uint64(16)), "vmsnap_read_memory")
print("memory 0x%x %s" % (gpa, buf.raw.hex()))
lib.vmsnap_close(snap)
