# SPDX-License-Identifier: MIT
# Cross toolchain for ppc64le (64-bit little-endian POWER): Debian's
# powerpc64le-linux-gnu cross compiler against the sysroot that .ci/cross
# unpacks into build-ppc64le/sysroot. Used by .ci/cross.
set(VMSNAP_CROSS_ARCH ppc64le)
set(VMSNAP_CROSS_TRIPLET powerpc64le-linux-gnu)
set(VMSNAP_CROSS_LOADER lib/powerpc64le-linux-gnu/ld64.so.2)
set(VMSNAP_CROSS_QEMU ppc64le)
include(${CMAKE_CURRENT_LIST_DIR}/cross-toolchain.cmake)
