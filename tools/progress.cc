// SPDX-License-Identifier: MIT
// Terminal progress bar.
#include "tools/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>

namespace vmsnap::tools {

namespace {
constexpr auto kDelay = std::chrono::milliseconds(500);    // never flash for quick work
constexpr auto kRedraw = std::chrono::milliseconds(100);

int TerminalWidth() {
  struct winsize ws {};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) return ws.ws_col;
  return 80;
}
}  // namespace

std::string HumanBytes(uint64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    u++;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  }
  return buf;
}

namespace {
ProgressMode g_mode = ProgressMode::kAuto;
}  // namespace

void SetProgressMode(ProgressMode mode) { g_mode = mode; }
bool Quiet() { return g_mode == ProgressMode::kQuiet; }

ProgressBar::ProgressBar(std::string label, uint64_t total_bytes)
    : label_(std::move(label)),
      total_(total_bytes),
      enabled_(g_mode == ProgressMode::kForce || (g_mode == ProgressMode::kAuto && isatty(STDERR_FILENO) == 1)),
      start_(Clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() { Finish(); }

std::string ProgressBar::Render(const std::string& label, uint64_t done, uint64_t total,
                                double elapsed_s, int width) {
  double rate = elapsed_s > 0 ? static_cast<double>(done) / elapsed_s : 0;
  // Built by appending: GCC 12 at -O3 warns falsely (-Wrestrict) on
  // `"literal" + std::string&&`.
  std::string tail(" ");
  tail += HumanBytes(done);
  if (total) tail += " / " + HumanBytes(total);
  tail += "  " + HumanBytes(static_cast<uint64_t>(rate)) + "/s";
  if (total && done < total && rate > 0) {
    double left = static_cast<double>(total - done) / rate;
    char buf[32];
    std::snprintf(buf, sizeof buf, "  %um%02us left", unsigned(left) / 60, unsigned(left) % 60);
    tail += buf;
  }
  std::string head = label + " ";
  int bar = width - 1 - static_cast<int>(head.size() + tail.size()) - 7;
  std::string line = head;
  if (total && bar >= 10) {
    double frac = done >= total ? 1.0 : static_cast<double>(done) / static_cast<double>(total);
    int fill = static_cast<int>(frac * bar);
    line += '[';
    line.append(static_cast<size_t>(fill), '#');
    line.append(static_cast<size_t>(bar - fill), ' ');
    line += ']';
    char pct[8];
    std::snprintf(pct, sizeof pct, " %3d%%", static_cast<int>(frac * 100));
    line += pct;
  }
  return line + tail;
}

void ProgressBar::Update(uint64_t done) {
  if (!enabled_ || finished_) return;
  auto now = Clock::now();
  if (now - start_ < kDelay && g_mode != ProgressMode::kForce) return;
  if (drawn_ && now - last_draw_ < kRedraw) return;
  last_draw_ = now;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  std::string line = Render(label_, done, total_, elapsed, TerminalWidth());
  std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void ProgressBar::Finish() {
  if (finished_) return;
  finished_ = true;
  if (drawn_) {
    std::fprintf(stderr, "\r\x1b[K");
    std::fflush(stderr);
  }
}

}  // namespace vmsnap::tools
