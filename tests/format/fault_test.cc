// SPDX-License-Identifier: MIT
// A failed save never damages the destination: ENOSPC after N bytes, a short
// write followed by an error, fsync, close and rename failures each leave no
// file at the destination (or the old one byte for byte) and no temp file.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>

#include "format/io.h"
#include "format/output.h"
#include "format/reader.h"
#include "format/writer.h"
#include "tests/format/test_util.h"

namespace vmsnap {
namespace {

using testing::Bytes;
using testing::TempDir;

struct Faults {
  int64_t enospc_after = -1;  // fail the write that would pass this many bytes
  bool short_write = false;   // that write first writes what fits, then fails (EIO)
  bool fail_sync = false;
  bool fail_close = false;
  bool fail_rename = false;
  bool fail_create = false;
};

class FaultFile final : public WritableFile {
 public:
  FaultFile(std::unique_ptr<WritableFile> base, const Faults& f, std::atomic<int64_t>* written)
      : base_(std::move(base)), f_(f), written_(written) {}
  Status Append(const void* data, size_t len) override {
    if (f_.enospc_after >= 0 && *written_ + int64_t(len) > f_.enospc_after) {
      const size_t fit = size_t(f_.enospc_after - *written_);
      if (f_.short_write && fit > 0) {
        VMSNAP_RETURN_IF_ERROR(base_->Append(data, fit));
        *written_ += int64_t(fit);
        return Status::FromErrno(EIO, "write (injected short write)");
      }
      return Status::FromErrno(ENOSPC, "write (injected)");
    }
    *written_ += int64_t(len);
    return base_->Append(data, len);
  }
  Status Sync() override {
    if (f_.fail_sync) return Status::FromErrno(EIO, "fsync (injected)");
    return base_->Sync();
  }
  Status Close() override {
    Status s = base_->Close();
    if (f_.fail_close) return Status::FromErrno(EIO, "close (injected)");
    return s;
  }

 private:
  std::unique_ptr<WritableFile> base_;
  Faults f_;
  std::atomic<int64_t>* written_;
};

class FaultEnv final : public Env {
 public:
  explicit FaultEnv(Faults f) : f_(f) {}
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path,
                                                        unsigned mode) override {
    if (f_.fail_create) return Status::FromErrno(EACCES, "create (injected)");
    VMSNAP_ASSIGN_OR_RETURN(auto base, Env::Default()->NewWritableFile(path, mode));
    return std::unique_ptr<WritableFile>(new FaultFile(std::move(base), f_, &written_));
  }
  Status Rename(const std::string& from, const std::string& to) override {
    if (f_.fail_rename) return Status::FromErrno(EXDEV, "rename (injected)");
    return Env::Default()->Rename(from, to);
  }
  Status Remove(const std::string& path) override { return Env::Default()->Remove(path); }
  Status SyncDir(const std::string& dir) override { return Env::Default()->SyncDir(dir); }

 private:
  Faults f_;
  std::atomic<int64_t> written_{0};
};

// A snapshot with a few MiB of mixed memory, so failures land in many places.
Status Save(const std::string& path, Env* env, unsigned threads = 2) {
  static Bytes mem = [] {
    Bytes m(600 * 4096, 0);
    testing::Rng rng(5);
    for (size_t p = 0; p < 600; ++p) {
      if (p % 5 == 1) rng.Fill(m.data() + p * 4096, 4096);
      if (p % 5 == 2) std::memset(m.data() + p * 4096, 0x42, 4096);
    }
    return m;
  }();
  WriterOptions o;
  o.env = env;
  o.threads = threads;
  o.chunk_pages = 64;
  VMSNAP_ASSIGN_OR_RETURN(auto w, SnapshotWriter::Create(path, o));
  auto r = w->manifest().getMemory().initRegions(1);
  r[0].setSize(mem.size());
  VMSNAP_RETURN_IF_ERROR(w->AddMemory(0, mem.data(), mem.size()));
  return w->Commit();
}

uint64_t FullSize() {
  TempDir d;
  EXPECT_TRUE(Save(d / "s.vmsnap", nullptr).ok());
  return testing::ReadFileBytes(d / "s.vmsnap").size();
}

TEST(Faults, EnospcAnywhereLeavesNoFile) {
  const uint64_t size = FullSize();
  ASSERT_GT(size, 100000u);
  std::vector<int64_t> points = {0, 1, 63, 64, 65, 4096, 4097, 20000, int64_t(size / 2),
                                 int64_t(size) - 200, int64_t(size) - 64, int64_t(size) - 1};
  for (int64_t n : points) {
    for (bool short_write : {false, true}) {
      TempDir d;
      FaultEnv env({.enospc_after = n, .short_write = short_write});
      Status s = Save(d / "s.vmsnap", &env);
      ASSERT_FALSE(s.ok()) << "after " << n;
      if (short_write) {
        EXPECT_TRUE(s.code() == Code::kNoSpace || s.code() == Code::kIo) << s.message();
      } else {
        EXPECT_EQ(s.code(), Code::kNoSpace) << s.message();
        EXPECT_NE(s.message().find("No space left"), std::string::npos) << s.message();
      }
      EXPECT_TRUE(d.List().empty()) << "after " << n << ": " << *d.List().begin();
    }
  }
}

TEST(Faults, ExistingDestinationIsUntouched) {
  TempDir d;
  const std::string dest = d / "s.vmsnap";
  testing::WriteFileBytes(dest, Bytes{'o', 'l', 'd', ' ', 'f', 'i', 'l', 'e'});
  const Bytes before = testing::ReadFileBytes(dest);
  const uint64_t size = FullSize();
  std::vector<Faults> cases = {
      {.enospc_after = 0},       {.enospc_after = 5000},
      {.enospc_after = int64_t(size) - 10, .short_write = true},
      {.fail_sync = true},       {.fail_close = true},
      {.fail_rename = true},     {.fail_create = true},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    FaultEnv env(cases[i]);
    Status s = Save(dest, &env, unsigned(i % 3));
    EXPECT_FALSE(s.ok()) << "case " << i;
    EXPECT_EQ(testing::ReadFileBytes(dest), before) << "case " << i;
    EXPECT_EQ(d.List(), std::set<std::string>{"s.vmsnap"}) << "case " << i;
  }
  // And a successful save replaces it atomically.
  ASSERT_TRUE(Save(dest, nullptr).ok());
  EXPECT_TRUE(SnapshotReader::Open(dest).ok());
  EXPECT_EQ(d.List(), std::set<std::string>{"s.vmsnap"});
}

TEST(Faults, EachFailureIsReportedWithItsCause) {
  TempDir d;
  struct Case {
    Faults f;
    const char* text;
  } cases[] = {{{.fail_sync = true}, "fsync"},
               {{.fail_close = true}, "close"},
               {{.fail_rename = true}, "rename"},
               {{.fail_create = true}, "create"}};
  for (const auto& c : cases) {
    FaultEnv env(c.f);
    Status s = Save(d / "s.vmsnap", &env);
    EXPECT_NE(s.message().find(c.text), std::string::npos) << s.message();
    EXPECT_FALSE(testing::FileExists(d / "s.vmsnap"));
    EXPECT_TRUE(d.List().empty());
  }
}

TEST(Faults, AbandonedWriterRemovesItsTempFile) {
  TempDir d;
  Bytes page(4096, 3);  // outlives the writer, as AddMemory requires
  {
    auto w = SnapshotWriter::Create(d / "s.vmsnap", WriterOptions{});
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->AddMemory(0, page.data(), page.size()).ok());
    EXPECT_EQ(d.List().size(), 1u);
    EXPECT_EQ(d.List().begin()->rfind(".s.vmsnap.tmp-", 0), 0u);
  }
  EXPECT_TRUE(d.List().empty());
}

// The one output writer (format/output.h) under injected ENOSPC and EIO, for
// a stream of bytes with holes as export writes it: the old file stays byte
// for byte, no temporary remains, and the error names the user's path.
TEST(Faults, OutputFileFailuresKeepTheOldFileAndNameTheUsersPath) {
  TempDir d;
  const std::string dest = d / "out.raw";
  const Bytes old{'o', 'l', 'd'};
  testing::WriteFileBytes(dest, old);
  Bytes piece(100000, 0x5a);
  for (Faults f : {Faults{.enospc_after = 0}, Faults{.enospc_after = 150000},
                   Faults{.enospc_after = 150000, .short_write = true}, Faults{.fail_sync = true},
                   Faults{.fail_rename = true}}) {
    FaultEnv env(f);
    OutputOptions o;
    o.env = &env;
    auto out = OutputFile::Create(dest, o);
    ASSERT_TRUE(out.ok()) << out.status().message();
    Status s = (*out)->Append(piece.data(), piece.size());
    if (s.ok()) s = (*out)->SkipTo(300000);
    if (s.ok()) s = (*out)->Append(piece.data(), piece.size());
    if (s.ok()) s = (*out)->Commit();
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find(dest), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find(".tmp-"), std::string::npos) << s.message();
    out->reset();
    EXPECT_EQ(testing::ReadFileBytes(dest), old);
    EXPECT_EQ(d.List().size(), 1u) << *d.List().rbegin();
  }
  // Without faults the holes read back as zeros and the size is exact.
  auto out = OutputFile::Create(dest, {});
  ASSERT_TRUE(out.ok());
  ASSERT_TRUE((*out)->Append(piece.data(), 10).ok());
  ASSERT_TRUE((*out)->SkipTo(8192).ok());
  ASSERT_TRUE((*out)->Commit().ok());
  Bytes got = testing::ReadFileBytes(dest);
  ASSERT_EQ(got.size(), 8192u);
  EXPECT_EQ(got[9], 0x5a);
  EXPECT_EQ(got[10], 0);
  EXPECT_EQ(got[8191], 0);
}

// A temporary whose writer is alive (holds its lock) is left alone; one whose
// writer is gone is removed by the next write to that path.
TEST(Faults, StaleTemporariesAreRemovedLiveOnesKept) {
  TempDir d;
  const std::string dest = d / "s.vmsnap";
  auto live = OutputFile::Create(dest, {});
  ASSERT_TRUE(live.ok());
  testing::WriteFileBytes(d / ".s.vmsnap.tmp-0123abcd", Bytes{1});
  testing::WriteFileBytes(d / ".s.vmsnap.tmp-notmine", Bytes{1});
  ASSERT_TRUE(Save(dest, nullptr).ok());
  auto names = d.List();
  EXPECT_EQ(names.count(".s.vmsnap.tmp-0123abcd"), 0u);
  EXPECT_EQ(names.count(".s.vmsnap.tmp-notmine"), 1u);  // not a name this writer makes
  EXPECT_EQ(names.size(), 3u);                           // s.vmsnap, the live temporary, notmine
}

}  // namespace
}  // namespace vmsnap
