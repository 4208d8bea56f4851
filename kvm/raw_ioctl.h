// SPDX-License-Identifier: MIT
// The one raw ioctl call of the architecture modules (kvm/<arch>/*_ioctl.cc):
// the kernel's error comes back as a negative errno, as the modules'
// interfaces (and the kernel models that stand in for them) report it.
#pragma once

#include <sys/ioctl.h>

#include <cerrno>

namespace vmsnap::kvm {

inline int RawIoctl(int fd, unsigned long request, const void* arg) {
  int r = ::ioctl(fd, request, const_cast<void*>(arg));
  return r < 0 ? -errno : r;
}

// For requests whose numbers and structs are one architecture's own: on any
// other host refuse with -ENOSYS rather than hand the kernel a foreign layout.
inline int NativeIoctl(bool native_host, int fd, unsigned long request, const void* arg) {
  return native_host ? RawIoctl(fd, request, arg) : -ENOSYS;
}

}  // namespace vmsnap::kvm
