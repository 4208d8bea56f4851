// SPDX-License-Identifier: MIT
// Each x86 kernel struct's manifest mapping (state/x86_64/x86_fields) must be
// complete in both directions: a field that capture writes but restore never
// reads, or a schema field that restore reads but capture never writes, would
// lose state silently on a real save and load. Both directions are checked
// for every struct, with every field set to a value of its own.
#include <capnp/dynamic.h>
#include <capnp/message.h>
#include <capnp/pretty-print.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <set>
#include <string>

#include "state/x86_64/x86_fields.h"

namespace vmsnap::state::x86 {
namespace {

std::string Text(capnp::DynamicStruct::Reader r) { return kj::str(r).cStr(); }

// Fills every field of `d` (recursively) with a value of its own: integers
// 1..100 in turn (they fit every width a kernel struct uses), bools true,
// lists at the length `lengths` gives for their field name (default 2).
void Fill(capnp::DynamicStruct::Builder d, unsigned& counter, const std::map<std::string, unsigned>& lengths,
          const std::set<std::string>& skip) {
  for (capnp::StructSchema::Field f : d.getSchema().getFields()) {
    const std::string name = f.getProto().getName().cStr();
    if (skip.count(name)) continue;
    capnp::Type t = f.getType();
    auto next = [&] { return uint64_t(counter++ % 100 + 1); };
    auto len = [&] { return lengths.count(name) ? lengths.at(name) : 2u; };
    switch (t.which()) {
      case capnp::schema::Type::BOOL: d.set(f, true); break;
      case capnp::schema::Type::INT8: case capnp::schema::Type::INT16: case capnp::schema::Type::INT32:
      case capnp::schema::Type::INT64: d.set(f, int64_t(next())); break;
      case capnp::schema::Type::UINT8: case capnp::schema::Type::UINT16: case capnp::schema::Type::UINT32:
      case capnp::schema::Type::UINT64: d.set(f, next()); break;
      case capnp::schema::Type::TEXT: d.set(f, capnp::Text::Reader("cap")); break;
      case capnp::schema::Type::DATA: {
        auto data = d.init(f, len()).as<capnp::Data>();
        for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(next());
        break;
      }
      case capnp::schema::Type::STRUCT: Fill(d.init(f).as<capnp::DynamicStruct>(), counter, lengths, skip); break;
      case capnp::schema::Type::LIST: {
        auto list = d.init(f, len()).as<capnp::DynamicList>();
        for (unsigned i = 0; i < list.size(); ++i) {
          if (t.asList().getElementType().isStruct()) {
            Fill(list[i].as<capnp::DynamicStruct>(), counter, lengths, skip);
          } else {
            list.set(i, next());
          }
        }
        break;
      }
      default: FAIL() << "field " << name << " has a type this test does not fill";
    }
  }
}

// Schema -> kernel struct -> schema gives back every field.
template <typename S, typename RoundTrip>
void SchemaRoundTrip(const char* what, RoundTrip round_trip, const std::map<std::string, unsigned>& lengths = {},
                     const std::set<std::string>& skip = {}) {
  capnp::MallocMessageBuilder in, out;
  auto src = in.initRoot<S>();
  unsigned counter = 0;
  Fill(capnp::toDynamic(src), counter, lengths, skip);
  auto dst = out.initRoot<S>();
  ASSERT_NO_FATAL_FAILURE(round_trip(src.asReader(), dst));
  EXPECT_EQ(Text(capnp::toDynamic(dst.asReader())), Text(capnp::toDynamic(src.asReader()))) << what;
}

// Kernel struct -> schema -> kernel struct -> schema is stable, so restore
// reads back everything capture wrote.
template <typename S, typename K, typename Enc, typename Dec>
void KernelRoundTrip(const char* what, const K& k, Enc enc, Dec dec) {
  capnp::MallocMessageBuilder a, b;
  auto first = a.initRoot<S>();
  enc(k, first);
  K back{};
  dec(first.asReader(), back);
  auto second = b.initRoot<S>();
  enc(back, second);
  EXPECT_EQ(Text(capnp::toDynamic(second.asReader())), Text(capnp::toDynamic(first.asReader()))) << what;
}

template <typename K>
K Pattern() {
  K k;
  auto* p = reinterpret_cast<uint8_t*>(&k);
  for (size_t i = 0; i < sizeof k; ++i) p[i] = uint8_t(i * 37 + 11);
  return k;
}

TEST(X86Fields, EveryStructMapsBothWays) {
  SchemaRoundTrip<sx::Regs>("regs", [](auto r, auto b) { kvm_regs k; Decode(r, k); Encode(k, b); });
  // kvm_sregs has the interrupt bitmap and no PDPTRs; kvm_sregs2 the reverse.
  SchemaRoundTrip<sx::Sregs>("sregs", [](auto r, auto b) { kvm_sregs k; Decode(r, k); Encode(k, b); },
                             {{"interruptBitmap", 4}}, {"pdptrs"});
  SchemaRoundTrip<sx::Sregs>("sregs2", [](auto r, auto b) { kvm_sregs2 k; Decode(r, k); Encode(k, b); },
                             {{"pdptrs", 4}}, {"interruptBitmap"});
  SchemaRoundTrip<sx::DebugRegs>("debugregs", [](auto r, auto b) { kvm_debugregs k; Decode(r, k); Encode(k, b); },
                                 {}, {"flags"});
  SchemaRoundTrip<sx::VcpuEvents>("events", [](auto r, auto b) { kvm_vcpu_events k; Decode(r, k); Encode(k, b); });
  SchemaRoundTrip<sx::Pic>("pic", [](auto r, auto b) { kvm_pic_state k; Decode(r, k); Encode(k, b); });
  SchemaRoundTrip<sx::Ioapic>("ioapic", [](auto r, auto b) {
    kvm_ioapic_state k;
    ASSERT_TRUE(Decode(r, k).ok());
    Encode(k, b);
  }, {{"redirtbl", KVM_IOAPIC_NUM_PINS}});
  SchemaRoundTrip<sx::Pit>("pit", [](auto r, auto b) {
    kvm_pit_state2 k;
    ASSERT_TRUE(Decode(r, k).ok());
    Encode(k, b);
  }, {{"channels", 3}});
  SchemaRoundTrip<sx::Clock>("clock", [](auto r, auto b) { kvm_clock_data k; Decode(r, k); Encode(k, b); });
  SchemaRoundTrip<sx::VmConfig>("vm config", [](auto r, auto b) { Encode(Decode(r), b); });
  // The per-vCPU lists and blobs, on a vCPU with only them set.
  SchemaRoundTrip<sx::Vcpu>("vcpu lists", [](auto r, auto b) {
    kvm_xcrs x;
    ASSERT_TRUE(Decode(r, x).ok());
    ASSERT_TRUE(Encode(x, b).ok());
    kvm_lapic_state l;
    ASSERT_TRUE(Decode(r, l).ok());
    Encode(l, b);
    std::vector<kvm_msr_entry> msrs = DecodeMsrs(r);
    Encode(std::span<const kvm_msr_entry>(msrs), b);
    std::vector<kvm_cpuid_entry2> cpuid = DecodeCpuid(r.getCpuid());
    Encode(std::span<const kvm_cpuid_entry2>(cpuid), b);
  }, {{"lapic", sizeof(kvm_lapic_state)}},
     {"mpState", "regs", "sregs", "xsave", "debugregs", "events", "tscKhz", "kvmclockCtrl"});
}

TEST(X86Fields, KernelStructsSurviveCaptureAndRestore) {
  KernelRoundTrip<sx::Regs>("regs", Pattern<kvm_regs>(), [](const auto& k, auto b) { Encode(k, b); },
                            [](auto r, auto& k) { Decode(r, k); });
  KernelRoundTrip<sx::Sregs>("sregs", Pattern<kvm_sregs>(), [](const auto& k, auto b) { Encode(k, b); },
                             [](auto r, auto& k) { Decode(r, k); });
  kvm_sregs2 s2 = Pattern<kvm_sregs2>();
  s2.flags = KVM_SREGS2_FLAGS_PDPTRS_VALID;
  KernelRoundTrip<sx::Sregs>("sregs2", s2, [](const auto& k, auto b) { Encode(k, b); },
                             [](auto r, auto& k) { Decode(r, k); });
  kvm_debugregs d = Pattern<kvm_debugregs>();
  d.flags = 0;
  KernelRoundTrip<sx::DebugRegs>("debugregs", d, [](const auto& k, auto b) { Encode(k, b); },
                                 [](auto r, auto& k) { Decode(r, k); });
  KernelRoundTrip<sx::VcpuEvents>("events", Pattern<kvm_vcpu_events>(), [](const auto& k, auto b) { Encode(k, b); },
                                  [](auto r, auto& k) { Decode(r, k); });
  KernelRoundTrip<sx::Pic>("pic", Pattern<kvm_pic_state>(), [](const auto& k, auto b) { Encode(k, b); },
                           [](auto r, auto& k) { Decode(r, k); });
  KernelRoundTrip<sx::Ioapic>("ioapic", Pattern<kvm_ioapic_state>(), [](const auto& k, auto b) { Encode(k, b); },
                              [](auto r, auto& k) { ASSERT_TRUE(Decode(r, k).ok()); });
  KernelRoundTrip<sx::Pit>("pit", Pattern<kvm_pit_state2>(), [](const auto& k, auto b) { Encode(k, b); },
                           [](auto r, auto& k) { ASSERT_TRUE(Decode(r, k).ok()); });
  KernelRoundTrip<sx::Clock>("clock", Pattern<kvm_clock_data>(), [](const auto& k, auto b) { Encode(k, b); },
                             [](auto r, auto& k) { Decode(r, k); });
  kvm_xcrs x = Pattern<kvm_xcrs>();
  x.nr_xcrs = 2;
  KernelRoundTrip<sx::Vcpu>("xcrs", x, [](const auto& k, auto b) { ASSERT_TRUE(Encode(k, b).ok()); },
                            [](auto r, auto& k) { ASSERT_TRUE(Decode(r, k).ok()); });
  KernelRoundTrip<sx::Vcpu>("lapic", Pattern<kvm_lapic_state>(), [](const auto& k, auto b) { Encode(k, b); },
                            [](auto r, auto& k) { ASSERT_TRUE(Decode(r, k).ok()); });
}

TEST(X86Fields, BadListsAreRefusedNotTruncated) {
  capnp::MallocMessageBuilder m;
  auto io = m.initRoot<sx::Ioapic>();
  io.initRedirtbl(3);
  kvm_ioapic_state k;
  EXPECT_EQ(Decode(io.asReader(), k).message(), "IOAPIC state has 3 pins");
  auto pit = m.initRoot<sx::Pit>();
  pit.initChannels(2);
  kvm_pit_state2 p;
  EXPECT_EQ(Decode(pit.asReader(), p).message(), "PIT state has 2 channels");
  auto v = m.initRoot<sx::Vcpu>();
  v.initLapic(100);
  kvm_lapic_state l;
  EXPECT_EQ(Decode(v.asReader(), l).message(), "LAPIC image is not 1024 bytes");
}

}  // namespace
}  // namespace vmsnap::state::x86
