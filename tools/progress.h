// SPDX-License-Identifier: MIT
// A one-line progress bar on stderr for long commands (verify, diff, flatten,
// save, export): bytes done, rate and time left. Silent unless stderr is a
// terminal, and only shown once the work has taken more than half a second.
//
//   ProgressBar bar("verifying", total_bytes);
//   bar.Update(done);   // any thread-compatible call pattern; cheap to call often
//   bar.Finish();       // clears the line; the destructor does it too
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace vmsnap::tools {

class ProgressBar {
 public:
  ProgressBar(std::string label, uint64_t total_bytes);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void Update(uint64_t done_bytes);
  // The total, when it is only known later (0 = unknown: no percentage).
  void SetTotal(uint64_t total_bytes) { total_ = total_bytes; }
  void Finish();

  // Formats the bar as it would be drawn (tests, and for other front ends).
  static std::string Render(const std::string& label, uint64_t done, uint64_t total,
                            double elapsed_s, int width);

 private:
  using Clock = std::chrono::steady_clock;
  std::string label_;
  uint64_t total_;
  bool enabled_;
  bool drawn_ = false;
  bool finished_ = false;
  Clock::time_point start_;
  Clock::time_point last_draw_;
};

// How every bar of the process behaves: kAuto draws on a terminal after half
// a second; kQuiet (-q) never draws; kForce (--progress) draws from the
// start even when stderr is not a terminal.
enum class ProgressMode { kAuto, kQuiet, kForce };
void SetProgressMode(ProgressMode mode);
// -q also silences warnings: code that would print one asks this first.
bool Quiet();

// "1.5 MiB", "512 B".
std::string HumanBytes(uint64_t bytes);

}  // namespace vmsnap::tools
