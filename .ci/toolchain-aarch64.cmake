# SPDX-License-Identifier: MIT
# Cross toolchain for aarch64 (64-bit little-endian Arm): Debian's
# aarch64-linux-gnu cross compiler against the sysroot that .ci/cross unpacks
# into build-aarch64/sysroot. Used by .ci/cross.
set(VMSNAP_CROSS_ARCH aarch64)
set(VMSNAP_CROSS_TRIPLET aarch64-linux-gnu)
set(VMSNAP_CROSS_LOADER lib/aarch64-linux-gnu/ld-linux-aarch64.so.1)
set(VMSNAP_CROSS_QEMU aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/cross-toolchain.cmake)
