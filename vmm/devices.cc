// SPDX-License-Identifier: MIT
// The port devices: see devices.h.
#include "vmm/devices.h"

#include <cerrno>
#include <cstring>

namespace vmsnap::vmm {
namespace {

constexpr uint16_t kPortSerial = 0x3f8;
constexpr uint16_t kPortSerialLsr = 0x3fd;
constexpr uint16_t kPortExit = 0xf4;
constexpr uint16_t kPortDoorbell = 0xf5;

}  // namespace

SerialOut::~SerialOut() {
  if (!out_) return;
  std::fflush(out_);
  if (owned_) std::fclose(out_);
}

Status SerialOut::Open(const std::string& path) {
  if (path.empty() || path == "-") {
    out_ = stdout;
    // A buffer given now, by the thread that opens the device: stdio would
    // otherwise allocate one on the vCPU thread's first write, and that
    // thread's first allocation makes glibc set up a whole malloc arena on
    // the way to the guest's first output.
    static char buffer[BUFSIZ];
    std::setvbuf(stdout, buffer, _IOFBF, sizeof buffer);
    return Status::Ok();
  }
  out_ = std::fopen(path.c_str(), "w");
  if (!out_) return Status::FromErrno(errno, "cannot open serial output " + path);
  owned_ = true;
  return Status::Ok();
}

void SerialOut::Write(const uint8_t* data, size_t len) {
  std::lock_guard<std::mutex> lk(mu_);
  std::fwrite(data, 1, len, out_);
  if (std::memchr(data, '\n', len)) std::fflush(out_);
}

void SerialOut::Flush() {
  std::lock_guard<std::mutex> lk(mu_);
  std::fflush(out_);
}

void AddSerialPorts(PortBus& bus, SerialOut& serial) {
  bus.Register(kPortSerial, [&serial](PortIo& io) {
    if (io.out) {
      for (size_t k = 0; k < io.count; ++k) serial.Write(io.data + k * io.size, 1);
    }
    return true;
  });
  bus.Register(kPortSerialLsr, [](PortIo& io) {
    if (!io.out) {
      for (size_t k = 0; k < io.count; ++k) io.data[k * io.size] = 0x60;  // transmitter empty
    }
    return true;
  });
}

void AddExitPort(PortBus& bus, std::function<void(int status)> on_exit) {
  bus.Register(kPortExit, [on_exit = std::move(on_exit)](PortIo& io) {
    if (!io.out) return true;
    on_exit(io.data[0] & 0xff);
    return false;
  });
}

void AddDoorbellPort(PortBus& bus, std::function<void()> on_ring) {
  bus.Register(kPortDoorbell, [on_ring = std::move(on_ring)](PortIo& io) {
    if (io.out) on_ring();
    return true;
  });
}

}  // namespace vmsnap::vmm
