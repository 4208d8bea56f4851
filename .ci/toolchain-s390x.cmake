# SPDX-License-Identifier: MIT
# Cross toolchain for s390x (64-bit big-endian): Debian's s390x-linux-gnu cross
# compiler against the sysroot that .ci/cross unpacks into build-s390x/sysroot.
# Used by .ci/cross.
set(VMSNAP_CROSS_ARCH s390x)
set(VMSNAP_CROSS_TRIPLET s390x-linux-gnu)
set(VMSNAP_CROSS_LOADER lib/s390x-linux-gnu/ld64.so.1)
set(VMSNAP_CROSS_QEMU s390x)
include(${CMAKE_CURRENT_LIST_DIR}/cross-toolchain.cmake)
