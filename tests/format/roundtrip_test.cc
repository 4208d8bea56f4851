// SPDX-License-Identifier: MIT
// Round trip of every manifest field of every architecture, driven by Cap'n
// Proto reflection: a field added to the schema later is filled and compared
// without touching this test.
#include <capnp/dynamic.h>
#include <capnp/schema.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <map>
#include <set>
#include <string>

#include "format/reader.h"
#include "format/writer.h"
#include "tests/format/test_util.h"

namespace vmsnap {
namespace {

using capnp::DynamicList;
using capnp::DynamicStruct;
using capnp::DynamicValue;
using capnp::schema::Type;

// Fields the writer owns: it overwrites whatever the caller sets.
bool WriterOwned(const std::string& path) {
  return path == ".formatMajor" || path == ".formatMinor" || path == ".chunks" ||
         path == ".memory.pageSize";
}

// Sets every field to a value distinct from its default and (as far as the
// type allows) from every other field. `variant` picks which member of each
// union is set; list element i uses variant + i, so one manifest already
// exercises several members of the vCPU union.
class Filler {
 public:
  explicit Filler(int variant) : variant_(variant) {}

  void FillStruct(DynamicStruct::Builder b, const std::string& path, int elem, int depth) {
    ASSERT_LT(depth, 16) << path;
    auto schema = b.getSchema();
    for (auto f : schema.getNonUnionFields()) FillField(b, f, path, elem, depth);
    auto uf = schema.getUnionFields();
    if (uf.size() > 0) {
      auto f = uf[unsigned(variant_ + elem) % uf.size()];
      union_members_.insert(path + "." + std::string(f.getProto().getName().cStr()));
      FillField(b, f, path, elem, depth);
    }
  }

  const std::set<std::string>& union_members() const { return union_members_; }

 private:
  uint64_t NextInt(Type::Which w) {
    uint64_t v = counter_++;
    switch (w) {
      case Type::INT8: case Type::UINT8: return v % 127 + 1;
      case Type::INT16: case Type::UINT16: return v % 32767 + 1;
      case Type::INT32: case Type::UINT32: return v * 0x10001 % 0x7fffffff + 1;
      default: return v * 0x0101010101010101ull % 0x7fffffffffffffffull + 1;
    }
  }


  void FillField(DynamicStruct::Builder b, capnp::StructSchema::Field f, const std::string& parent,
                 int elem, int depth) {
    const std::string path = parent + "." + std::string(f.getProto().getName().cStr());
    if (WriterOwned(path)) return;
    if (f.getProto().isGroup()) {
      FillStruct(b.init(f).as<DynamicStruct>(), path, elem, depth + 1);
      return;
    }
    auto type = f.getType();
    switch (type.which()) {
      case Type::VOID: b.set(f, capnp::VOID); break;
      case Type::BOOL: b.set(f, true); break;
      case Type::INT8: case Type::INT16: case Type::INT32: case Type::INT64:
        b.set(f, int64_t(NextInt(type.which())));
        break;
      case Type::UINT8: case Type::UINT16: case Type::UINT32: case Type::UINT64:
        b.set(f, NextInt(type.which()));
        break;
      case Type::FLOAT32: case Type::FLOAT64: b.set(f, double(counter_++) + 0.5); break;
      case Type::TEXT: {
        std::string t = "text-" + std::to_string(counter_++) + "-" + path;
        b.set(f, capnp::Text::Reader(t.c_str()));
        break;
      }
      case Type::DATA: {
        auto d = b.init(f, unsigned(3 + counter_ % 5)).as<capnp::Data>();
        for (size_t i = 0; i < d.size(); ++i) d[i] = uint8_t(counter_ * 7 + i + 1);
        ++counter_;
        break;
      }
      case Type::ENUM: {
        auto en = type.asEnum().getEnumerants();
        unsigned k = en.size() > 1 ? unsigned(1 + counter_++ % (en.size() - 1)) : 0;
        b.set(f, capnp::DynamicEnum(en[k]));
        break;
      }
      case Type::STRUCT:
        FillStruct(b.init(f).as<DynamicStruct>(), path, elem, depth + 1);
        break;
      case Type::LIST:
        FillList(b.init(f, 3).as<DynamicList>(), type.asList().getElementType(), path, depth);
        break;
      default: break;  // no interfaces or AnyPointers in the manifest
    }
  }

  void FillList(DynamicList::Builder l, capnp::Type et, const std::string& path, int depth) {
    for (unsigned i = 0; i < l.size(); ++i) {
      const std::string ep = path + "[]";
      switch (et.which()) {
        case Type::BOOL: l.set(i, true); break;
        case Type::INT8: case Type::INT16: case Type::INT32: case Type::INT64:
          l.set(i, int64_t(NextInt(et.which())));
          break;
        case Type::UINT8: case Type::UINT16: case Type::UINT32: case Type::UINT64:
          l.set(i, NextInt(et.which()));
          break;
        case Type::FLOAT32: case Type::FLOAT64: l.set(i, double(counter_++) + 0.25); break;
        case Type::TEXT: {
          std::string t = "elem-" + std::to_string(counter_++);
          l.set(i, capnp::Text::Reader(t.c_str()));
          break;
        }
        case Type::DATA: {
          auto d = l.init(i, 4).as<capnp::Data>();
          for (size_t k = 0; k < d.size(); ++k) d[k] = uint8_t(counter_ + k + 1);
          ++counter_;
          break;
        }
        case Type::ENUM: {
          auto en = et.asEnum().getEnumerants();
          l.set(i, capnp::DynamicEnum(en[unsigned(counter_++ % en.size())]));
          break;
        }
        case Type::STRUCT:
          FillStruct(l[i].as<DynamicStruct>(), ep, int(i), depth + 1);
          break;
        case Type::LIST:
          FillList(l.init(i, 2).as<DynamicList>(), et.asList().getElementType(), ep, depth + 1);
          break;
        default: break;
      }
    }
  }

  int variant_;
  uint64_t counter_ = 1;
  std::set<std::string> union_members_;
};

// Compares two messages field by field, naming each difference by its path.
class Comparer {
 public:
  void Compare(DynamicValue::Reader a, DynamicValue::Reader b, const std::string& path) {
    if (WriterOwned(path)) return;
    if (a.getType() != b.getType()) {
      diffs_.push_back(path + ": type differs");
      return;
    }
    switch (a.getType()) {
      case DynamicValue::STRUCT: {
        auto sa = a.as<DynamicStruct>(), sb = b.as<DynamicStruct>();
        int wa = -1, wb = -1;
        KJ_IF_MAYBE(f, sa.which()) { wa = int(f->getIndex()); }
        KJ_IF_MAYBE(f, sb.which()) { wb = int(f->getIndex()); }
        if (wa != wb) {
          diffs_.push_back(path + ": different union member");
          return;
        }
        for (auto f : sa.getSchema().getFields()) {
          if (f.getProto().getDiscriminantValue() != capnp::schema::Field::NO_DISCRIMINANT &&
              wa != int(f.getIndex())) {
            continue;
          }
          const std::string fp = path + "." + std::string(f.getProto().getName().cStr());
          if (!f.getProto().isGroup() && f.getType().which() != Type::VOID &&
              !sa.has(f, capnp::HasMode::NON_DEFAULT) && !WriterOwned(fp)) {
            unset_.push_back(fp);  // every field must carry a non-default value
          }
          Compare(sa.get(f), sb.get(f), fp);
        }
        break;
      }
      case DynamicValue::LIST: {
        auto la = a.as<DynamicList>(), lb = b.as<DynamicList>();
        if (la.size() != lb.size()) {
          diffs_.push_back(path + ": list size " + std::to_string(la.size()) + " vs " +
                           std::to_string(lb.size()));
          return;
        }
        for (unsigned i = 0; i < la.size(); ++i) {
          Compare(la[i], lb[i], path + "[" + std::to_string(i) + "]");
        }
        break;
      }
      default: {
        ++leaves_;
        std::string sa = kj::str(a).cStr(), sb = kj::str(b).cStr();
        if (sa != sb) diffs_.push_back(path + ": " + sa + " vs " + sb);
      }
    }
  }
  std::vector<std::string> diffs_;
  std::vector<std::string> unset_;
  size_t leaves_ = 0;
};

// Replaces the generated memory map with one the writer and reader accept,
// keeping distinct values in every field.
void FixUp(schema::Manifest::Builder m) {
  auto regions = m.getMemory().initRegions(3);
  for (unsigned i = 0; i < 3; ++i) {
    regions[i].setSlot(10 + i);
    regions[i].setGuestPhysAddr(0x100000ull * (i + 1) + 0x1000 * i);
    regions[i].setSize(0x4000 * (i + 1));
    regions[i].setFlags(0x20 + i);
    regions[i].setName(("region-" + std::to_string(i)).c_str());
  }
  auto id = m.getParent().initSnapshotId(16);
  for (unsigned i = 0; i < 16; ++i) id[i] = uint8_t(0xa0 + i);
}

class RoundTrip : public ::testing::TestWithParam<int> {};

TEST_P(RoundTrip, EveryFieldComesBackAsWritten) {
  const int variant = GetParam();
  testing::TempDir dir;
  const std::string path = dir / "all.vmsnap";

  capnp::MallocMessageBuilder expected_msg;
  auto expected = expected_msg.initRoot<schema::Manifest>();
  Filler f1(variant);
  f1.FillStruct(capnp::toDynamic(expected), "", 0, 0);
  FixUp(expected);

  WriterOptions o;
  o.threads = 2;
  auto w = SnapshotWriter::Create(path, o);
  ASSERT_TRUE(w.ok()) << w.status().message();
  Filler f2(variant);
  f2.FillStruct(capnp::toDynamic((*w)->manifest()), "", 0, 0);
  FixUp((*w)->manifest());
  std::vector<uint8_t> page(4096, 0x5a);
  ASSERT_TRUE((*w)->AddMemory(0x200000 + 0x1000, page.data(), page.size()).ok());
  Status c = (*w)->Commit();
  ASSERT_TRUE(c.ok()) << c.message();

  auto r = SnapshotReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ((*r)->id(), (*w)->id());

  Comparer cmp;
  cmp.Compare(capnp::toDynamic(expected.asReader()), capnp::toDynamic((*r)->manifest()), "");
  for (const auto& d : cmp.diffs_) ADD_FAILURE() << "differs: " << d;
  for (const auto& u : cmp.unset_) ADD_FAILURE() << "filler left unset: " << u;
  // Sanity: the walk really covered the three architectures' fields.
  EXPECT_GT(cmp.leaves_, 250u);
  EXPECT_EQ((*r)->manifest().getFormatMajor(), layout::kMajor);
  EXPECT_EQ((*r)->manifest().getMemory().getPageSize(), 4096u);
  ASSERT_EQ((*r)->chunk_index().size(), 1u);
  std::vector<uint8_t> back(4096);
  ASSERT_TRUE((*r)->ReadChunk(0, back.data()).ok());
  EXPECT_EQ(back, page);
}

INSTANTIATE_TEST_SUITE_P(Variants, RoundTrip, ::testing::Values(0, 1, 2, 3));

TEST(RoundTripCoverage, EveryUnionMemberIsExercised) {
  std::set<std::string> seen;
  for (int v = 0; v < 4; ++v) {
    capnp::MallocMessageBuilder msg;
    Filler f(v);
    f.FillStruct(capnp::toDynamic(msg.initRoot<schema::Manifest>()), "", 0, 0);
    seen.insert(f.union_members().begin(), f.union_members().end());
  }
  for (const char* m : {".vcpus[].x8664", ".vcpus[].s390x", ".vcpus[].ppc64", ".vm.none",
                        ".vm.x8664", ".vm.s390x", ".vm.ppc64"}) {
    EXPECT_TRUE(seen.count(m)) << m;
  }
}

TEST(RoundTripFile, CreatedMode0600AndIdIsXxh128OfManifest) {
  testing::TempDir dir;
  const std::string path = dir / "m.vmsnap";
  auto w = SnapshotWriter::Create(path, WriterOptions{});
  ASSERT_TRUE(w.ok());
  (*w)->manifest().getMemory().initRegions(0);
  ASSERT_TRUE((*w)->Commit().ok());
  struct stat st;
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  testing::Bytes b = testing::ReadFileBytes(path);
  auto s = testing::FindSections(b);
  EXPECT_EQ((*w)->id(), layout::ComputeId({b.data() + s.manifest_offset, s.manifest_length}));
  EXPECT_EQ((*w)->file_size(), b.size());
  EXPECT_EQ(dir.List(), std::set<std::string>{"m.vmsnap"});
}

}  // namespace
}  // namespace vmsnap
