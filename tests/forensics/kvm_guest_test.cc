// SPDX-License-Identifier: MIT
// On real KVM: the `paging` guest maps chosen virtual addresses with 4 KiB,
// 2 MiB and 1 GiB pages in page tables of its own, writes known bytes through
// them and rings the doorbell. `vmsnap read --gva` on the doorbell snapshot
// returns those bytes, and its ELF export opens in gdb with the guest's
// registers and memory.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>

#include "tests/forensics/shell.h"

namespace {

using vmsnap::forensics_test::RunResult;
using vmsnap::forensics_test::Shell;
using vmsnap::forensics_test::Slurp;

class PagingGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/kvm is not available";
    char tmpl[] = "/tmp/vmsnap-forensics-kvm-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty() && std::system(("rm -rf " + dir_).c_str()) != 0) std::fprintf(stderr, "cleanup failed\n");
  }
  RunResult Vmsnap(const std::string& args) { return Shell(dir_, std::string(VMSNAP_BIN) + " " + args); }
  std::string dir_;
};

TEST_F(PagingGuest, ReadGvaReturnsWhatTheGuestWroteThroughEachPageSize) {
  const std::string snap = dir_ + "/paging-{n}.vmsnap";
  auto r = Vmsnap(std::string("run ") + FORENSICS_GUEST + " --mem 64M --serial " + dir_ +
                  "/serial --snapshot-on-doorbell " + snap);
  ASSERT_EQ(r.exit, 0) << r.err << Slurp(dir_ + "/serial");
  const std::string serial = Slurp(dir_ + "/serial");
  ASSERT_NE(serial.find("PAGES MAPPED"), std::string::npos) << serial;
  // The guest maps its 1 GiB page only when its CPUID offers 1 GiB pages; KVM
  // does not without two-dimensional paging (the 1 GiB walk is also covered
  // by the synthetic snapshots in cli_test.cc).
  const bool have_1g = serial.find("1 GIB PAGE MAPPED") != std::string::npos;
  if (!have_1g) std::printf("[   NOTE   ] this vCPU has no 1 GiB pages: the 1 GiB case is not run\n");
  const std::string s1 = dir_ + "/paging-1.vmsnap";

  struct Case {
    const char* gva;
    const char* text;
    const char* gpa;   // where the guest's tables put it
    const char* levels;
  };
  const Case cases[] = {
      {"0x7f1234567000", "written through a 4 KiB page", nullptr, "PML4 PDPT PD PT"},
      {"0x555540001234", "written through a 2 MiB page", "0x801234", "PML4 PDPT PD"},
      {"0xffff888000c00000", "written through a 1 GiB page", "0xc00000", "PML4 PDPT"},
  };
  for (const Case& c : cases) {
    if (!have_1g && std::string(c.levels) == "PML4 PDPT") continue;
    r = Vmsnap("read " + s1 + " --gva " + c.gva + " --len 28 --format raw");
    ASSERT_EQ(r.exit, 0) << c.gva << ": " << r.err;
    EXPECT_EQ(r.out, c.text) << c.gva;
    r = Vmsnap("translate " + s1 + " --gva " + c.gva + " --json");
    ASSERT_EQ(r.exit, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    std::string levels;
    for (auto& s : j["steps"]) levels += (levels.empty() ? "" : " ") + s["level"].get<std::string>();
    EXPECT_EQ(levels, c.levels) << c.gva;
    if (c.gpa) {
      EXPECT_EQ(j["gpa"], c.gpa) << c.gva;
      r = Vmsnap("read " + s1 + " --gpa " + c.gpa + " --len 28 --format raw");
      EXPECT_EQ(r.out, c.text) << c.gpa;
    }
  }
  // A neighbouring virtual page the guest left unmapped.
  r = Vmsnap("read " + s1 + " --gva 0x7f1234568000 --len 1");
  EXPECT_EQ(r.exit, 2);
  EXPECT_NE(r.err.find("PT entry 360 at gpa"), std::string::npos) << r.err;

  // The ELF core: gdb shows the registers and memory as saved.
  if (Shell(dir_, "command -v gdb").exit != 0) GTEST_SKIP() << "gdb is not installed";
  r = Vmsnap("inspect " + s1 + " --json");
  ASSERT_EQ(r.exit, 0) << r.err;
  auto inspect = nlohmann::json::parse(r.out);
  const std::string rip = inspect["vcpus"][0]["regs"]["rip"];
  r = Vmsnap("export " + s1 + " --format elf -o " + dir_ + "/core.elf");
  ASSERT_EQ(r.exit, 0) << r.err;
  r = Shell(dir_, "gdb -batch -nx -c " + dir_ + "/core.elf -ex 'info registers' -ex 'x/s 0x801234'");
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("rip\\s+" + rip + "\\s"))) << rip << "\n" << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(rbx\s+0x5eed5eed5eed5eed)"))) << r.out;
  EXPECT_TRUE(std::regex_search(r.out, std::regex(R"(cs\s+0x8\s)"))) << r.out;
  EXPECT_NE(r.out.find("0x801234:\t\"written through a 2 MiB page"), std::string::npos) << r.out;
}

}  // namespace
