// SPDX-License-Identifier: MIT
// The JSON model of a snapshot, built by walking the manifest with Cap'n Proto
// reflection so that a field added to a schema shows up in inspect and diff
// without code here.
#include "tools/state_json.h"

#include <capnp/dynamic.h>
#include <capnp/schema.h>
#include <kj/exception.h>

#include <cinttypes>
#include <cstdio>
#include <ctime>

#include "format/layout.h"
#include "format/load_history.h"
#include "tools/decode_arm64.h"
#include "tools/decode_ppc.h"
#include "tools/decode_s390.h"
#include "tools/decode_x86.h"
#include "tools/memory_map.h"

namespace vmsnap::tools {

std::string HexSigned(int64_t v) {
  if (v >= 0) return Hex(static_cast<uint64_t>(v));
  return "-" + Hex(0 - static_cast<uint64_t>(v));
}

std::string SnakeCase(std::string_view camel) {
  std::string s;
  for (char c : camel) {
    if (c >= 'A' && c <= 'Z') {
      if (!s.empty()) s += '_';
      s += static_cast<char>(c - 'A' + 'a');
    } else {
      s += c;
    }
  }
  return s;
}

std::string MpStateName(uint32_t state) {
  // KVM_MP_STATE_* values, include/uapi/linux/kvm.h; shared by every architecture.
  static const char* const kNames[] = {"RUNNABLE",      "UNINITIALIZED", "INIT_RECEIVED",
                                       "HALTED",        "SIPI_RECEIVED", "STOPPED",
                                       "CHECK_STOP",    "OPERATING",     "LOAD",
                                       "AP_RESET_HOLD", "SUSPENDED"};
  if (state < std::size(kNames)) return kNames[state];
  return "UNKNOWN(" + std::to_string(state) + ")";
}

std::string_view MsrName(uint32_t index) {
  struct Entry {
    uint32_t index;
    const char* name;
  };
  // Intel SDM vol. 4 names (IA32_ prefix dropped), AMD's for the syscall MSRs,
  // the kernel's (arch/x86/include/uapi/asm/kvm_para.h) for the KVM ones.
  static const Entry kNames[] = {
      {0x10, "TSC"},
      {0x11, "KVM_WALL_CLOCK"},
      {0x12, "KVM_SYSTEM_TIME"},
      {0x1b, "APIC_BASE"},
      {0x34, "SMI_COUNT"},
      {0x3a, "FEATURE_CONTROL"},
      {0x3b, "TSC_ADJUST"},
      {0x48, "SPEC_CTRL"},
      {0x8b, "UCODE_REV"},
      {0xe7, "MPERF"},
      {0xe8, "APERF"},
      {0xfe, "MTRRCAP"},
      {0x10a, "ARCH_CAPABILITIES"},
      {0x122, "TSX_CTRL"},
      {0x140, "MISC_FEATURES_ENABLES"},
      {0x174, "SYSENTER_CS"},
      {0x175, "SYSENTER_ESP"},
      {0x176, "SYSENTER_EIP"},
      {0x179, "MCG_CAP"},
      {0x17a, "MCG_STATUS"},
      {0x1a0, "MISC_ENABLE"},
      {0x1d9, "DEBUGCTL"},
      {0x200, "MTRR_PHYSBASE0"}, {0x201, "MTRR_PHYSMASK0"},
      {0x202, "MTRR_PHYSBASE1"}, {0x203, "MTRR_PHYSMASK1"},
      {0x204, "MTRR_PHYSBASE2"}, {0x205, "MTRR_PHYSMASK2"},
      {0x206, "MTRR_PHYSBASE3"}, {0x207, "MTRR_PHYSMASK3"},
      {0x208, "MTRR_PHYSBASE4"}, {0x209, "MTRR_PHYSMASK4"},
      {0x20a, "MTRR_PHYSBASE5"}, {0x20b, "MTRR_PHYSMASK5"},
      {0x20c, "MTRR_PHYSBASE6"}, {0x20d, "MTRR_PHYSMASK6"},
      {0x20e, "MTRR_PHYSBASE7"}, {0x20f, "MTRR_PHYSMASK7"},
      {0x250, "MTRR_FIX64K_00000"},
      {0x258, "MTRR_FIX16K_80000"},
      {0x259, "MTRR_FIX16K_A0000"},
      {0x268, "MTRR_FIX4K_C0000"}, {0x269, "MTRR_FIX4K_C8000"},
      {0x26a, "MTRR_FIX4K_D0000"}, {0x26b, "MTRR_FIX4K_D8000"},
      {0x26c, "MTRR_FIX4K_E0000"}, {0x26d, "MTRR_FIX4K_E8000"},
      {0x26e, "MTRR_FIX4K_F0000"}, {0x26f, "MTRR_FIX4K_F8000"},
      {0x277, "PAT"},
      {0x2ff, "MTRR_DEF_TYPE"},
      {0x6e0, "TSC_DEADLINE"},
      {0xda0, "XSS"},
      {0x40000020, "HV_TIME_REF_COUNT"},
      {0x4b564d00, "KVM_WALL_CLOCK_NEW"},
      {0x4b564d01, "KVM_SYSTEM_TIME_NEW"},
      {0x4b564d02, "KVM_ASYNC_PF_EN"},
      {0x4b564d03, "KVM_STEAL_TIME"},
      {0x4b564d04, "KVM_PV_EOI_EN"},
      {0x4b564d05, "KVM_POLL_CONTROL"},
      {0x4b564d06, "KVM_ASYNC_PF_INT"},
      {0x4b564d07, "KVM_ASYNC_PF_ACK"},
      {0xc0000080, "EFER"},
      {0xc0000081, "STAR"},
      {0xc0000082, "LSTAR"},
      {0xc0000083, "CSTAR"},
      {0xc0000084, "SFMASK"},
      {0xc0000100, "FS_BASE"},
      {0xc0000101, "GS_BASE"},
      {0xc0000102, "KERNEL_GS_BASE"},
      {0xc0000103, "TSC_AUX"},
      {0xc0010015, "HWCR"},
  };
  for (const Entry& e : kNames) {
    if (e.index == index) return e.name;
  }
  return {};
}

std::span<const VolatileMsr> VolatileMsrs() {
  // Chosen for a capture -> restore -> capture round trip of a paused VM.
  // Not listed, on purpose: the kvm-clock MSRs (0x11, 0x12, 0x4b564d00/01)
  // hold the guest-physical address of the clock structures and an enable
  // bit, which the guest writes and a restore puts back unchanged (the time
  // itself lives in guest memory and in vm.clock, annotated volatile);
  // TSC_ADJUST, which a host-initiated TSC write leaves alone; the PMU
  // counters, which count guest events only and so stand still while paused.
  static const VolatileMsr kList[] = {
      {0x10, "TSC", "the guest TSC keeps counting host time while the VM is paused"},
      {0x6e0, "TSC_DEADLINE",
       "an armed deadline that passes while paused fires and is cleared to 0"},
      {0xe7, "MPERF", "counts time when KVM emulates it"},
      {0xe8, "APERF", "counts time when KVM emulates it"},
      {0x40000020, "HV_TIME_REF_COUNT", "Hyper-V reference time counter, read-only time"},
  };
  return kList;
}

namespace {

// Annotation ids from schemas/common.capnp.
constexpr uint64_t kDecimalId = 0xc1e3b1a2d4f50601ull;
constexpr uint64_t kDecodedId = 0xc1e3b1a2d4f50602ull;
constexpr uint64_t kVolatileId = 0xc1e3b1a2d4f50603ull;

struct FieldNotes {
  bool decimal = false;
  bool is_volatile = false;
  std::string decoder;  // empty: none
};

FieldNotes NotesOf(capnp::StructSchema::Field f) {
  FieldNotes n;
  for (auto a : f.getProto().getAnnotations()) {
    if (a.getId() == kDecimalId) n.decimal = true;
    if (a.getId() == kVolatileId) n.is_volatile = true;
    if (a.getId() == kDecodedId && a.getValue().isText()) n.decoder = a.getValue().getText();
  }
  return n;
}

bool IsMsrList(capnp::Type t) {
  if (!t.isList()) return false;
  capnp::Type e = t.asList().getElementType();
  return e.isStruct() && e.asStruct().getProto().getId() == capnp::typeId<schema::x86::Msr>();
}

class Walker {
 public:
  explicit Walker(VolatileSet* vol) : vol_(vol) {}

  // All fields of `s` into `out` (an object), the active union member
  // flattened in when it is a struct.
  void Fields(capnp::DynamicStruct::Reader s, const std::string& path, Json& out) {
    auto schema = s.getSchema();
    KJ_IF_MAYBE(active, s.which()) {
      // Handled in declaration order below.
      (void)active;
    }
    for (auto f : schema.getFields()) {
      bool in_union = f.getProto().getDiscriminantValue() != capnp::schema::Field::NO_DISCRIMINANT;
      if (in_union) {
        auto which = s.which();
        KJ_IF_MAYBE(active, which) {
          if (*active != f) continue;
        } else {
          continue;
        }
        capnp::Type t = f.getType();
        if (t.isVoid()) continue;
        if (t.isStruct()) {
          Fields(s.get(f).as<capnp::DynamicStruct>(), path, out);
          continue;
        }
      }
      Field(s, f, path, out);
    }
    Hooks(s, path, out);
  }

 private:
  static std::string Join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  void MarkVolatile(const std::string& p) {
    if (vol_) vol_->paths.insert(p);
  }

  void Field(capnp::DynamicStruct::Reader s, capnp::StructSchema::Field f, const std::string& path,
             Json& out) {
    std::string name = f.getProto().getName();
    std::string key = SnakeCase(name);
    std::string p = Join(path, key);
    FieldNotes notes = NotesOf(f);
    if (notes.is_volatile) MarkVolatile(p);
    capnp::Type t = f.getType();
    // mp_state speaks the KVM name, whatever the architecture.
    if (name == "mpState" && t.isUInt32()) {
      out[key] = MpStateName(s.get(f).as<uint32_t>());
      return;
    }
    if (IsMsrList(t)) {
      Json msrs = Json::object();
      for (auto e : s.get(f).as<capnp::DynamicList>()) {
        auto msr = e.as<capnp::DynamicStruct>().as<schema::x86::Msr>();
        std::string idx = Hex(msr.getIndex());
        msrs[idx] = Hex(msr.getValue());
        for (const VolatileMsr& v : VolatileMsrs()) {
          if (v.index == msr.getIndex()) MarkVolatile(p + "." + idx);
        }
      }
      out[key] = std::move(msrs);
      return;
    }
    out[key] = Value(s.get(f), t, notes, p);
    if (!notes.decoder.empty() && t.isData()) {
      capnp::Data::Reader d = s.get(f).as<capnp::Data>();
      std::span<const uint8_t> bytes(d.begin(), d.size());
      if (notes.decoder == "xsave") {
        out[key + "_decoded"] = DecodeXsave(bytes);
      } else if (notes.decoder == "lapic") {
        out[key + "_decoded"] = DecodeLapic(bytes);
        MarkVolatile(p + "_decoded.timer_current_count");
        if (vol_) vol_->blob_masks[p].push_back({kLapicTmcctOffset, kLapicTmcctSize});
      }
    }
  }

  Json Value(capnp::DynamicValue::Reader v, capnp::Type t, const FieldNotes& notes,
             const std::string& p) {
    switch (v.getType()) {
      case capnp::DynamicValue::VOID: return nullptr;
      case capnp::DynamicValue::BOOL: return v.as<bool>();
      case capnp::DynamicValue::INT:
        if (notes.decimal) return v.as<int64_t>();
        return HexSigned(v.as<int64_t>());
      case capnp::DynamicValue::UINT:
        if (notes.decimal) return v.as<uint64_t>();
        return Hex(v.as<uint64_t>());
      case capnp::DynamicValue::FLOAT: return v.as<double>();
      case capnp::DynamicValue::TEXT: return std::string(v.as<capnp::Text>().cStr());
      case capnp::DynamicValue::DATA: {
        capnp::Data::Reader d = v.as<capnp::Data>();
        return BytesHex(std::span<const uint8_t>(d.begin(), d.size()));
      }
      case capnp::DynamicValue::ENUM: {
        auto e = v.as<capnp::DynamicEnum>();
        KJ_IF_MAYBE(en, e.getEnumerant()) {
          return std::string(en->getProto().getName());
        }
        return e.getRaw();
      }
      case capnp::DynamicValue::STRUCT: {
        Json o = Json::object();
        Fields(v.as<capnp::DynamicStruct>(), p, o);
        return o;
      }
      case capnp::DynamicValue::LIST: {
        Json a = Json::array();
        capnp::Type et = t.isList() ? t.asList().getElementType() : capnp::Type();
        size_t i = 0;
        for (auto e : v.as<capnp::DynamicList>()) {
          a.push_back(Value(e, et, notes, p + "[" + std::to_string(i++) + "]"));
        }
        return a;
      }
      default: return nullptr;  // capabilities and AnyPointer: not used by the manifest
    }
  }

  // Decoded views that depend on more than one field.
  void Hooks(capnp::DynamicStruct::Reader s, const std::string& path, Json& out) {
    uint64_t id = s.getSchema().getProto().getId();
    if (id == capnp::typeId<schema::s390::Vm>()) {
      auto vm = s.as<schema::s390::Vm>();
      out["cmma_decoded"] = DecodeCmma(vm.getCmma());
      out["skeys_decoded"] = DecodeSkeys(vm.getSkeys());
    } else if (id == capnp::typeId<schema::aarch64::SysReg>()) {
      out["name"] = Arm64RegName(s.as<schema::aarch64::SysReg>().getId());
    } else if (id == capnp::typeId<schema::aarch64::OneReg>()) {
      out["name"] = Arm64RegName(s.as<schema::aarch64::OneReg>().getId());
    } else if (id == capnp::typeId<schema::aarch64::VcpuInit>()) {
      auto f = s.as<schema::aarch64::VcpuInit>().getFeatures();
      uint32_t words[7] = {};
      for (unsigned w = 0; w < f.size() && w < 7; ++w) words[w] = f[w];
      out["features_decoded"] = Arm64Features(words, f.size() < 7 ? f.size() : 7);
    } else if (id == capnp::typeId<schema::aarch64::Vcpu>()) {
      Json names = Json::array();
      for (uint64_t r : s.as<schema::aarch64::Vcpu>().getRegList()) names.push_back(Arm64RegName(r));
      out["reg_list_decoded"] = std::move(names);
    } else if (id == capnp::typeId<schema::ppc::Hpte>()) {
      auto h = s.as<schema::ppc::Hpte>();
      DecodeHpte(h.getV(), h.getR(), out);
    }
  }

  VolatileSet* vol_;
};

std::string IsoTime(int64_t unix_ns) {
  time_t secs = static_cast<time_t>(unix_ns / 1000000000);
  struct tm tm_utc;
  if (gmtime_r(&secs, &tm_utc) == nullptr) return "";
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm_utc);
  return buf;
}

Json Walk(capnp::DynamicStruct::Reader s, const std::string& path, VolatileSet* vol) {
  Json o = Json::object();
  Walker(vol).Fields(s, path, o);
  return o;
}

}  // namespace

Result<Json> ManifestToJson(schema::Manifest::Reader m, const SnapshotFacts& facts, VolatileSet* vol) {
  try {
    Json j = Json::object();
    j["format_version"] = std::to_string(facts.format_major) + "." + std::to_string(facts.format_minor);
    j["arch"] = ArchName(m.getArch());
    j["id"] = facts.id;
    if (m.hasParent()) {
      auto p = m.getParent();
      Json pj = Json::object();
      auto id = p.getSnapshotId();
      pj["id"] = BytesHex(std::span<const uint8_t>(id.begin(), id.size()));
      pj["path"] = std::string(p.getPath().cStr());
      pj["depth"] = p.getDepth();
      j["parent"] = std::move(pj);
    } else {
      j["parent"] = nullptr;
    }
    Json created = Walk(capnp::toDynamic(m.getCreated()), "created", vol);
    created["time"] = IsoTime(m.getCreated().getTimeUnixNs());
    j["created"] = std::move(created);
    j["save"] = Walk(capnp::toDynamic(m.getSave()), "save", vol);
    // The lineage is shown only by snapshots that have one, so files without
    // it (all but those the built-in VMM writes) print as they always did.
    VMSNAP_ASSIGN_OR_RETURN(std::vector<LoadRecord> history, LoadHistoryOf(m));
    if (!history.empty()) {
      Json loads = Json::array();
      for (const LoadRecord& l : history) {
        Json e = Json::object();
        e["generation_id"] = BytesHex(l.generation_id);
        e["snapshot_id"] = l.snapshot_id ? Json(BytesHex(*l.snapshot_id)) : Json();
        e["time"] = IsoTime(l.time_unix_ns);
        e["warm"] = l.warm;
        loads.push_back(std::move(e));
      }
      j["loads"] = std::move(loads);
    }
    Json vcpus = Json::array();
    size_t i = 0;
    for (auto v : m.getVcpus()) {
      vcpus.push_back(Walk(capnp::toDynamic(v), "vcpus[" + std::to_string(i++) + "]", vol));
    }
    j["vcpus"] = std::move(vcpus);
    j["vm"] = Walk(capnp::toDynamic(m.getVm()), "vm", vol);
    Json devices = Json::array();
    i = 0;
    for (auto d : m.getDevices()) {
      if (d.getName() == kLoadHistoryRecord) continue;  // shown as "loads"
      devices.push_back(Walk(capnp::toDynamic(d), "devices[" + std::to_string(i++) + "]", vol));
    }
    j["devices"] = std::move(devices);

    MemoryStats st = ComputeMemoryStats(m);
    Json mem = Json::object();
    mem["size"] = st.size;
    mem["page_size"] = st.page_size;
    Json regions = Json::array();
    i = 0;
    for (auto r : m.getMemory().getRegions()) {
      regions.push_back(Walk(capnp::toDynamic(r), "memory.regions[" + std::to_string(i++) + "]", vol));
    }
    mem["regions"] = std::move(regions);
    mem["present_pages"] = st.present_pages;
    mem["zero_pages"] = st.zero_pages;
    mem["absent_pages"] = st.absent_pages;
    mem["stored_bytes"] = st.stored_bytes;
    mem["raw_bytes"] = st.raw_bytes;
    mem["chunks"] = st.chunks;
    j["memory"] = std::move(mem);
    return j;
  } catch (const kj::Exception& e) {
    return Status::Corruption(std::string("manifest: ") + e.getDescription().cStr());
  }
}

Result<Json> SnapshotToJson(const SnapshotReader& reader, VolatileSet* vol) {
  SnapshotFacts facts;
  facts.id = layout::IdToHex(reader.id());
  facts.format_major = reader.format_major();
  facts.format_minor = reader.format_minor();
  return ManifestToJson(reader.manifest(), facts, vol);
}

}  // namespace vmsnap::tools
