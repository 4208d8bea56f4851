// SPDX-License-Identifier: MIT
// The guest's port devices (docs/guest-abi.md, "Ports"): serial output, the
// exit port and the snapshot doorbell, each registered on a PortBus.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>

#include "base/status.h"
#include "vmm/ports.h"

namespace vmsnap::vmm {

// Where the guest's serial output goes: stdout ("-" or empty) or a file,
// truncated. Written by every vCPU thread.
class SerialOut {
 public:
  SerialOut() = default;
  SerialOut(const SerialOut&) = delete;
  SerialOut& operator=(const SerialOut&) = delete;
  ~SerialOut();

  Status Open(const std::string& path);
  void Write(const uint8_t* data, size_t len);
  void Flush();

 private:
  FILE* out_ = nullptr;
  bool owned_ = false;
  std::mutex mu_;
};

// The transmit register and the line status register of COM1.
void AddSerialPorts(PortBus& bus, SerialOut& serial);
// A byte written to the exit port ends the VM with that exit status.
void AddExitPort(PortBus& bus, std::function<void(int status)> on_exit);
// A write to the doorbell asks for a snapshot at exactly this point.
void AddDoorbellPort(PortBus& bus, std::function<void()> on_ring);

}  // namespace vmsnap::vmm
