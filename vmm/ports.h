// SPDX-License-Identifier: MIT
// Port-I/O dispatch: the generic vCPU loop hands each KVM_EXIT_IO to the
// handler a device registered for that port, and knows no device itself.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <utility>
#include <vector>

namespace vmsnap::vmm {

// One port access as KVM reports it: `count` items of `size` bytes at
// `data`, in the vCPU's run area (an `in` fills them).
struct PortIo {
  uint16_t port = 0;
  bool out = false;
  uint8_t* data = nullptr;
  size_t size = 0;
  size_t count = 0;
};

// Returns false when the vCPU loop must end (the device stopped the VM).
using PortHandler = std::function<bool(PortIo& io)>;

class PortBus {
 public:
  void Register(uint16_t port, PortHandler handler) { handlers_.emplace_back(port, std::move(handler)); }
  // An `in` reads all ones unless a handler says otherwise (no device
  // drives the bus); an `out` to a port without a handler is ignored.
  bool Dispatch(PortIo& io) const {
    if (!io.out) std::memset(io.data, 0xff, io.size * io.count);
    for (const auto& [port, handler] : handlers_) {
      if (port == io.port) return handler(io);
    }
    return true;
  }

 private:
  // A handful of ports: a linear search beats a map.
  std::vector<std::pair<uint16_t, PortHandler>> handlers_;
};

}  // namespace vmsnap::vmm
