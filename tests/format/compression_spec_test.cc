// SPDX-License-Identifier: MIT
// The --compress / "compress" syntax: what parses, what is refused and how the
// refusal reads, and that printing gives what SaveStats records.
#include <gtest/gtest.h>
#include <zstd.h>

#include <algorithm>
#include <string>

#include "format/compression_spec.h"

namespace vmsnap {
namespace {

TEST(CompressionSpecFormat, AcceptsTheThreeForms) {
  auto none = ParseCompressionSpec("none");
  ASSERT_TRUE(none.ok()) << none.status().message();
  EXPECT_EQ(none->codec, schema::Compression::NONE);

  auto plain = ParseCompressionSpec("zstd");
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->codec, schema::Compression::ZSTD);
  EXPECT_EQ(plain->zstd_level, 3);
  EXPECT_EQ(*plain, CompressionSpec{}) << "bare zstd is the default";

  for (int level : {1, 5, 19, -5, ZSTD_minCLevel(), ZSTD_maxCLevel()}) {
    auto s = ParseCompressionSpec("zstd:" + std::to_string(level));
    ASSERT_TRUE(s.ok()) << level << ": " << s.status().message();
    EXPECT_EQ(s->codec, schema::Compression::ZSTD);
    EXPECT_EQ(s->zstd_level, level);
  }
}

TEST(CompressionSpecFormat, LevelZeroIsZstdsDefaultAndIsRecordedAsSuch) {
  auto s = ParseCompressionSpec("zstd:0");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->zstd_level, ZSTD_CLEVEL_DEFAULT);
  EXPECT_EQ(ToString(*s), "zstd:3");
}

TEST(CompressionSpecFormat, RefusesJunkWithOneLineNamingTheFormsAndRange) {
  const std::string range = std::to_string(ZSTD_minCLevel()) + ".." + std::to_string(ZSTD_maxCLevel());
  for (const char* bad : {"", "zstd:", "zstd:3x", "lz4", "ZSTD:99", "zstd:99", "zstd:23", "zstd: 3", "zstd:+3",
                          "zstd:0x3", "zstd:3 ", " zstd", "none:1", "zstd:-", "zstd:1.5", "zstd3", "zstd::3",
                          "zstd:99999999999999999999", "zstd:-99999999999999999999"}) {
    auto s = ParseCompressionSpec(bad);
    ASSERT_FALSE(s.ok()) << "'" << bad << "' was accepted";
    EXPECT_EQ(s.status().code(), Code::kInvalidArgument) << bad;
    const std::string& m = s.status().message();
    EXPECT_NE(m.find("'" + std::string(bad) + "'"), std::string::npos) << m;
    EXPECT_NE(m.find("none, zstd or zstd:LEVEL"), std::string::npos) << m;
    EXPECT_NE(m.find(range), std::string::npos) << m;
    EXPECT_EQ(std::count(m.begin(), m.end(), '\n'), 0) << m;
  }
  EXPECT_FALSE(ParseCompressionSpec("zstd:" + std::to_string(ZSTD_minCLevel() - 1)).ok());
  EXPECT_FALSE(ParseCompressionSpec("zstd:" + std::to_string(ZSTD_maxCLevel() + 1)).ok());
}

TEST(CompressionSpecFormat, ToStringIsWhatSaveStatsRecordsAndParsesBack) {
  EXPECT_EQ(ToString(CompressionSpec{}), "zstd:3");
  EXPECT_EQ(ToString({schema::Compression::NONE, 3}), "none");
  EXPECT_EQ(ToString({schema::Compression::ZSTD, -5}), "zstd:-5");
  for (const char* text : {"auto", "none", "zstd:1", "zstd:-7", "zstd:22"}) {
    auto s = ParseCompressionSpec(text);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(ToString(*s), text);
  }
}

// "auto" is the adaptive codec, the default of saves, and what a writer
// configured from it records.
TEST(CompressionSpecParse, AutoIsAdaptiveAndTheSaveDefault) {
  auto a = ParseCompressionSpec("auto");
  ASSERT_TRUE(a.ok()) << a.status().message();
  EXPECT_TRUE(a->adaptive);
  EXPECT_EQ(a->codec, schema::Compression::ZSTD);
  EXPECT_EQ(*a, DefaultSaveCompression());
  EXPECT_FALSE(ParseCompressionSpec("zstd").value().adaptive);
  EXPECT_FALSE(ParseCompressionSpec("Auto").ok());
  EXPECT_FALSE(ParseCompressionSpec("auto:3").ok());
  WriterOptions w;
  Apply(*a, w);
  EXPECT_TRUE(w.adaptive);
  EXPECT_EQ(CompressionText(w), "auto");
  Apply(ParseCompressionSpec("zstd:5").value(), w);
  EXPECT_FALSE(w.adaptive) << "a fixed level after auto must not stay adaptive";
  EXPECT_EQ(CompressionText(w), "zstd:5");
  Apply(ParseCompressionSpec("none").value(), w);
  EXPECT_EQ(CompressionText(w), "none");
}

TEST(CompressionSpecFormat, ApplySetsCodecAndLevelOnly) {
  WriterOptions w;
  w.chunk_pages = 17;
  w.threads = 2;
  Apply({schema::Compression::NONE, 3}, w);
  EXPECT_EQ(w.compression, schema::Compression::NONE);
  Apply({schema::Compression::ZSTD, 19}, w);
  EXPECT_EQ(w.compression, schema::Compression::ZSTD);
  EXPECT_EQ(w.zstd_level, 19);
  EXPECT_EQ(w.chunk_pages, 17u);
  EXPECT_EQ(w.threads, 2u);
}

TEST(CompressionSpecFormat, HelpNamesTheFormsAndThisBuildsRange) {
  std::string h = CompressionSpecHelp();
  EXPECT_NE(h.find("zstd[:LEVEL]"), std::string::npos);
  EXPECT_NE(h.find("auto (the default"), std::string::npos);
  EXPECT_NE(h.find("default 3"), std::string::npos);
  EXPECT_NE(h.find(std::to_string(ZSTD_minCLevel()) + ".." + std::to_string(ZSTD_maxCLevel())), std::string::npos);
  EXPECT_NE(h.find("none"), std::string::npos);
}

}  // namespace
}  // namespace vmsnap
