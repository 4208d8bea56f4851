// SPDX-License-Identifier: MIT
// A test fixture for end-to-end tests that drive the `vmsnap` binary on real
// KVM: a scratch directory per test, commands run in it (in the foreground or
// the background), and waits on the files the VMs write. The including target
// defines VMSNAP_BIN (the binary's path).
#pragma once

#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace vmsnap::testing {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct RunResult {
  int status = -1;  // exit status; 128 + signal if killed
  std::string out, err;
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is not available: skipping real-KVM test";
    char tmpl[] = "/tmp/vmsnap-cli-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (pid_t p : children_) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  // Runs `vmsnap ARGS` (a shell command line; `program` instead of the
  // built `vmsnap` if given) in the scratch directory; a command still
  // running after `timeout_s` is killed and gets status 124.
  RunResult Run(const std::string& args, int timeout_s = 120, const std::string& program = VMSNAP_BIN) {
    std::string cmd = "cd " + dir_ + " && timeout " + std::to_string(timeout_s) + " " + program + " " + args +
                      " 2>" + Path("stderr.txt");
    RunResult r;
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return r;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.err = ReadFile(Path("stderr.txt"));
    return r;
  }

  // Starts `vmsnap ARGS` in the background, in the scratch directory;
  // TearDown kills it if it still runs. With `err`, its stderr goes to that
  // file and its stdout to /dev/null; `env` (VAR=VALUE) is set for it only.
  pid_t Spawn(const std::vector<std::string>& args, const std::string& err = "",
              const std::vector<std::string>& env = {}) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (::chdir(dir_.c_str()) != 0) _exit(126);
      if (!err.empty()) {
        const int fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        const int null = ::open("/dev/null", O_WRONLY);
        if (fd < 0 || null < 0) _exit(126);
        ::dup2(fd, 2);
        ::dup2(null, 1);
      }
      for (const std::string& e : env) ::putenv(const_cast<char*>(e.c_str()));
      std::vector<char*> argv;
      std::string bin = VMSNAP_BIN;
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (auto& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      _exit(127);
    }
    children_.push_back(pid);
    return pid;
  }

  // The exit status of a Spawn()ed process; -2 if it has not ended within
  // `limit` (TearDown kills it then).
  int Wait(pid_t pid, std::chrono::seconds limit = std::chrono::seconds(60)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    int st = 0;
    while (std::chrono::steady_clock::now() < end) {
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        children_.erase(std::remove(children_.begin(), children_.end(), pid), children_.end());
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -2;
  }

  // Waits until `file` holds `needle`.
  bool WaitFor(const std::string& file, const std::string& needle,
               std::chrono::seconds limit = std::chrono::seconds(60)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (ReadFile(file).find(needle) != std::string::npos) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  bool WaitForSocket(const std::string& path, std::chrono::seconds limit = std::chrono::seconds(30)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      struct stat st {};
      if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  int CountLines(const std::string& file, const std::string& prefix) {
    std::istringstream in(ReadFile(file));
    int count = 0;
    for (std::string line; std::getline(in, line);) count += line.rfind(prefix, 0) == 0;
    return count;
  }

  // Waits until `file` has at least `n` lines starting with `prefix`.
  bool WaitForLines(const std::string& file, const std::string& prefix, int n, std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      if (CountLines(file, prefix) >= n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  std::string dir_;
  std::vector<pid_t> children_;
};

}  // namespace vmsnap::testing
