# SPDX-License-Identifier: MIT
# Cross toolchain for s390x (Debian's s390x-linux-gnu cross compiler and multiarch
# libraries). Test binaries run under qemu-user; the Cap'n Proto compiler runs
# on the build host. Used by .ci/cross.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR s390x)
set(CMAKE_C_COMPILER s390x-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER s390x-linux-gnu-g++)
set(CMAKE_ASM_COMPILER s390x-linux-gnu-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE s390x-linux-gnu)
# Libraries and packages from the multiarch tree only; programs from the host.
set(CMAKE_FIND_ROOT_PATH /usr/s390x-linux-gnu /usr/lib/s390x-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# Without -L: qemu must not mix the host's C library into the guest's.
set(CMAKE_CROSSCOMPILING_EMULATOR /usr/bin/qemu-s390x-static)
# The schema compiler is a host program.
set(CAPNP_EXECUTABLE /usr/bin/capnp CACHE FILEPATH "host capnp")
set(CAPNPC_CXX_EXECUTABLE /usr/bin/capnpc-c++ CACHE FILEPATH "host capnpc-c++")
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/s390x-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
