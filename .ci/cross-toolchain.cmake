# SPDX-License-Identifier: MIT
# The part of the cross toolchain files common to every architecture: a
# Debian cross compiler (a host package) building against a sysroot of the
# foreign architecture's unpacked .debs (.ci/cross makes it). The including
# file sets VMSNAP_CROSS_ARCH, VMSNAP_CROSS_TRIPLET, VMSNAP_CROSS_LOADER (the
# dynamic loader's path inside the sysroot) and VMSNAP_CROSS_QEMU.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR ${VMSNAP_CROSS_ARCH})
set(CMAKE_C_COMPILER ${VMSNAP_CROSS_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${VMSNAP_CROSS_TRIPLET}-g++)
set(CMAKE_ASM_COMPILER ${VMSNAP_CROSS_TRIPLET}-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE ${VMSNAP_CROSS_TRIPLET})

# -DVMSNAP_SYSROOT=DIR, else build-<arch>/sysroot beside .ci. CMake re-reads
# this file for each try_compile, in another binary directory, so the value
# is passed on explicitly.
if(NOT VMSNAP_SYSROOT)
  set(VMSNAP_SYSROOT ${CMAKE_CURRENT_LIST_DIR}/../build-${VMSNAP_CROSS_ARCH}/sysroot)
endif()
get_filename_component(VMSNAP_SYSROOT "${VMSNAP_SYSROOT}" REALPATH)
if(NOT EXISTS ${VMSNAP_SYSROOT}/${VMSNAP_CROSS_LOADER})
  message(FATAL_ERROR "no ${VMSNAP_CROSS_ARCH} sysroot at ${VMSNAP_SYSROOT}: run .ci/cross ${VMSNAP_CROSS_ARCH}")
endif()
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES VMSNAP_SYSROOT)
set(CMAKE_SYSROOT ${VMSNAP_SYSROOT})

# Libraries, headers and CMake packages from the sysroot only; programs
# (capnp, pkg-config) from the host.
set(CMAKE_FIND_ROOT_PATH ${VMSNAP_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(ENV{PKG_CONFIG_SYSROOT_DIR} ${VMSNAP_SYSROOT})
set(ENV{PKG_CONFIG_LIBDIR} ${VMSNAP_SYSROOT}/usr/lib/${VMSNAP_CROSS_TRIPLET}/pkgconfig:${VMSNAP_SYSROOT}/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")

# Programs load the sysroot's C library through the sysroot's own loader:
# qemu-user runs the ELF interpreter a binary names, at that path, and the
# loader then finds every library through the rpath (DT_RPATH, not RUNPATH,
# so it also applies to the libraries' own dependencies). No qemu -L or
# QEMU_LD_PREFIX, which would mix the host's libraries into the guest's.
set(_vmsnap_rpath "-Wl,-rpath,${VMSNAP_SYSROOT}/lib/${VMSNAP_CROSS_TRIPLET}:${VMSNAP_SYSROOT}/usr/lib/${VMSNAP_CROSS_TRIPLET} -Wl,--disable-new-dtags")
set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,--dynamic-linker=${VMSNAP_SYSROOT}/${VMSNAP_CROSS_LOADER} ${_vmsnap_rpath}")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "${_vmsnap_rpath}")
set(CMAKE_MODULE_LINKER_FLAGS_INIT "${_vmsnap_rpath}")
set(CMAKE_CROSSCOMPILING_EMULATOR /usr/bin/qemu-${VMSNAP_CROSS_QEMU}-static)

# The schema compiler is a host program; .ci/cross checks that its version
# is the sysroot's libcapnp-dev's.
set(CAPNP_EXECUTABLE /usr/bin/capnp CACHE FILEPATH "host capnp")
set(CAPNPC_CXX_EXECUTABLE /usr/bin/capnpc-c++ CACHE FILEPATH "host capnpc-c++")
