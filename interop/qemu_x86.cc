// SPDX-License-Identifier: MIT
// QEMU x86-64 sections <-> vmsnap manifest: see qemu_x86.h and docs/interop-qemu.md.
#include "interop/qemu_x86.h"

#include <capnp/dynamic.h>
#include <capnp/schema.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "base/hex.h"

namespace vmsnap::interop::qemu {
namespace {

namespace sx = schema::x86;

// ---------------------------------------------------------------------------
// The mapping table. One row ties bits of one QEMU field to bits of one vmsnap
// value; import and export both walk it, so the two directions cannot drift.
// Only what no row can say (derived flags, "none" encodings, quirks of one
// side) is code, in Import*/Export* pairs below the table.

enum class To : uint8_t {
  kVcpu,   // a field of schema x86 Vcpu, by dotted path ("regs.rax", "sregs.cs.dpl")
  kVm,     // a field of schema x86 Vm ("picMaster.irr", "pit.channels[1].mode")
  kMsr,    // the vCPU's MSR `where`
  kXsave,  // little-endian bits at byte `where` of the XSAVE area
  kLapic,  // little-endian bits at byte `where` of the LAPIC register page
};
enum Dir : uint8_t { kBoth, kImportOnly };
// Row flags.
constexpr uint8_t kNonZero = 1;  // import only a non-zero value (an MSR KVM would refuse or need not see)

struct Row {
  std::string section;  // QEMU section id string
  uint32_t instance;    // VM-level sections; vCPU sections use the vCPU index
  std::string field;    // flattened vmdesc name
  uint32_t element;     // array element of the QEMU field
  To to;
  std::string path;     // kVcpu/kVm
  uint32_t where;       // kMsr index, kXsave/kLapic byte offset
  uint8_t qshift = 0, vshift = 0, width = 64;
  Dir dir = kBoth;
  uint8_t flags = 0;
};

bool PerVcpu(const std::string& section) {
  return section == "cpu" || section == "apic" || section == "cpu_common";
}

uint64_t Mask(unsigned width) { return width >= 64 ? ~0ull : (1ull << width) - 1; }

std::vector<Row> BuildTable() {
  std::vector<Row> t;
  auto vcpu = [&t](const std::string& sec, const std::string& f, uint32_t el, const std::string& path,
                   uint8_t qshift = 0, uint8_t width = 64, Dir dir = kBoth) {
    t.push_back({sec, 0, f, el, To::kVcpu, path, 0, qshift, 0, width, dir});
  };
  auto msr = [&t](const std::string& f, uint32_t el, uint32_t index, uint8_t flags = 0) {
    t.push_back({"cpu", 0, f, el, To::kMsr, "", index, 0, 0, 64, kBoth, flags});
  };
  auto blob = [&t](To to, const std::string& sec, const std::string& f, uint32_t el, uint32_t at, uint8_t vshift,
                   uint8_t width) { t.push_back({sec, 0, f, el, to, "", at, 0, vshift, width}); };
  auto vm = [&t](const std::string& sec, uint32_t inst, const std::string& f, uint32_t el, const std::string& path) {
    t.push_back({sec, inst, f, el, To::kVm, path, 0});
  };

  // General registers, in the encoding's order.
  const char* gpr[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                         "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
  for (uint32_t i = 0; i < 16; ++i) vcpu("cpu", "env.regs", i, std::string("regs.") + gpr[i]);
  vcpu("cpu", "env.eip", 0, "regs.rip");
  vcpu("cpu", "env.eflags", 0, "regs.rflags");

  // Segments: QEMU keeps the descriptor's second dword as "flags".
  const std::pair<const char*, const char*> segs[] = {
      {"env.segs[0].", "es"}, {"env.segs[1].", "cs"}, {"env.segs[2].", "ss"}, {"env.segs[3].", "ds"},
      {"env.segs[4].", "fs"}, {"env.segs[5].", "gs"}, {"env.ldt.", "ldt"},    {"env.tr.", "tr"}};
  for (auto [q, v] : segs) {
    std::string s = std::string("sregs.") + v + ".";
    vcpu("cpu", std::string(q) + "selector", 0, s + "selector");
    vcpu("cpu", std::string(q) + "base", 0, s + "base");
    vcpu("cpu", std::string(q) + "limit", 0, s + "limit");
    std::string f = std::string(q) + "flags";
    vcpu("cpu", f, 0, s + "type", 8, 4);
    vcpu("cpu", f, 0, s + "s", 12, 1);
    vcpu("cpu", f, 0, s + "dpl", 13, 2);
    vcpu("cpu", f, 0, s + "present", 15, 1);
    vcpu("cpu", f, 0, s + "avl", 20, 1);
    vcpu("cpu", f, 0, s + "l", 21, 1);
    vcpu("cpu", f, 0, s + "db", 22, 1);
    vcpu("cpu", f, 0, s + "g", 23, 1);
  }
  for (const char* d : {"gdt", "idt"}) {
    vcpu("cpu", std::string("env.") + d + ".base", 0, std::string("sregs.") + d + ".base");
    vcpu("cpu", std::string("env.") + d + ".limit", 0, std::string("sregs.") + d + ".limit");
  }
  for (uint32_t c : {0u, 2u, 3u, 4u}) vcpu("cpu", "env.cr[" + std::to_string(c) + "]", 0, "sregs.cr" + std::to_string(c));
  vcpu("cpu", "env.efer", 0, "sregs.efer");
  for (uint32_t d : {0u, 1u, 2u, 3u, 6u, 7u}) vcpu("cpu", "env.dr", d, "debugregs.dr" + std::to_string(d));
  vcpu("cpu", "env.xcr0", 0, "xcrs[0].value");
  vcpu("cpu", "env.tsc_khz", 0, "tscKhz");

  // Events and run state.
  vcpu("cpu", "env.nmi_injected", 0, "events.nmi.injected");
  vcpu("cpu", "env.nmi_pending", 0, "events.nmi.pending");
  vcpu("cpu", "env.hflags2", 0, "events.nmi.masked", 2, 1);      // HF2_NMI
  vcpu("cpu", "env.hflags", 0, "events.interrupt.shadow", 3, 1);  // HF_INHIBIT_IRQ
  vcpu("cpu", "env.hflags", 0, "events.smi.smm", 19, 1);          // HF_SMM
  vcpu("cpu", "env.soft_interrupt", 0, "events.interrupt.soft");
  vcpu("cpu", "env.has_error_code", 0, "events.exception.hasErrorCode");
  vcpu("cpu", "env.sipi_vector", 0, "events.sipiVector");
  vcpu("cpu", "env.mp_state", 0, "mpState");

  // The x87/SSE/AVX state as the XSAVE area lays it out.
  blob(To::kXsave, "cpu", "env.fpuc", 0, 0, 0, 16);
  blob(To::kXsave, "cpu", "env.fpus_vmstate", 0, 2, 0, 16);
  blob(To::kXsave, "cpu", "env.fptag_vmstate", 0, 4, 0, 8);  // the abridged tag, 1 = valid, both sides
  blob(To::kXsave, "cpu", "env.fpop", 0, 6, 0, 16);
  blob(To::kXsave, "cpu", "env.fpip", 0, 8, 0, 64);
  blob(To::kXsave, "cpu", "env.fpdp", 0, 16, 0, 64);
  blob(To::kXsave, "cpu", "env.mxcsr", 0, 24, 0, 32);
  for (uint32_t i = 0; i < 8; ++i) {
    std::string p = "env.fpregs[" + std::to_string(i) + "].tmp.";
    blob(To::kXsave, "cpu", p + "tmp_mant", 0, 32 + 16 * i, 0, 64);
    blob(To::kXsave, "cpu", p + "tmp_exp", 0, 40 + 16 * i, 0, 16);
  }
  for (uint32_t i = 0; i < 16; ++i) {
    std::string x = "env.xmm_regs[0][" + std::to_string(i) + "]._q_ZMMReg[";
    blob(To::kXsave, "cpu", x + "0]", 0, 160 + 16 * i, 0, 64);
    blob(To::kXsave, "cpu", x + "1]", 0, 168 + 16 * i, 0, 64);
    std::string y = "env.xmm_regs[1][" + std::to_string(i) + "]._q_ZMMReg[";
    blob(To::kXsave, "cpu", y + "2]", 0, 576 + 16 * i, 0, 64);
    blob(To::kXsave, "cpu", y + "3]", 0, 584 + 16 * i, 0, 64);
  }
  blob(To::kXsave, "cpu", "env.xstate_bv", 0, 512, 0, 64);

  // MSRs with a field of their own.
  const std::pair<const char*, uint32_t> msrs[] = {
      {"env.tsc", 0x10},
      {"env.sysenter_cs", 0x174},
      {"env.sysenter_esp", 0x175},
      {"env.sysenter_eip", 0x176},
      {"env.pat", 0x277},
      {"env.mtrr_deftype", 0x2ff},
      {"env.star", 0xc0000081},
      {"env.lstar", 0xc0000082},
      {"env.cstar", 0xc0000083},
      {"env.fmask", 0xc0000084},
      {"env.kernelgsbase", 0xc0000102},
      {"env.tsc_aux", 0xc0000103},
      {"env.tsc_adjust", 0x3b},
      {"env.msr_ia32_feature_control", 0x3a},
      {"env.spec_ctrl", 0x48},
      {"env.xss", 0xda0},
      {"env.umwait", 0xe1},
      {"env.tsx_ctrl", 0x122},
      {"env.async_pf_en_msr", 0x4b564d02},
      {"env.pv_eoi_en_msr", 0x4b564d04},
      {"env.steal_time_msr", 0x4b564d03},
      {"env.poll_control_msr", 0x4b564d05},
  };
  for (auto [f, index] : msrs) msr(f, 0, index);
  const uint32_t fixed[11] = {0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f};
  for (uint32_t i = 0; i < 11; ++i) msr("env.mtrr_fixed", i, fixed[i]);
  for (uint32_t i = 0; i < 8; ++i) {
    std::string p = "env.mtrr_var[" + std::to_string(i) + "].";
    msr(p + "base", 0, 0x200 + 2 * i, kNonZero);
    msr(p + "mask", 0, 0x201 + 2 * i, kNonZero);
  }
  msr("env.system_time_msr", 0, 0x4b564d01, kNonZero);
  msr("env.wall_clock_msr", 0, 0x4b564d00, kNonZero);
  msr("env.mcg_status", 0, 0x17a, kNonZero);

  // The local APIC, as KVM's register page (each register at index << 4).
  vcpu("apic", "apicbase", 0, "sregs.apicBase");
  vcpu("apic", "tpr", 0, "sregs.cr8", 4, 4, kImportOnly);
  blob(To::kLapic, "apic", "id", 0, 0x20, 24, 8);
  blob(To::kLapic, "apic", "tpr", 0, 0x80, 0, 8);
  blob(To::kLapic, "apic", "log_dest", 0, 0xd0, 24, 8);
  blob(To::kLapic, "apic", "dest_mode", 0, 0xe0, 28, 4);
  blob(To::kLapic, "apic", "spurious_vec", 0, 0xf0, 0, 32);
  for (uint32_t i = 0; i < 8; ++i) {
    blob(To::kLapic, "apic", "isr", i, 0x100 + 16 * i, 0, 32);
    blob(To::kLapic, "apic", "tmr", i, 0x180 + 16 * i, 0, 32);
    blob(To::kLapic, "apic", "irr", i, 0x200 + 16 * i, 0, 32);
  }
  blob(To::kLapic, "apic", "esr", 0, 0x280, 0, 32);
  blob(To::kLapic, "apic", "icr", 0, 0x300, 0, 32);
  blob(To::kLapic, "apic", "icr", 1, 0x310, 0, 32);
  for (uint32_t i = 0; i < 6; ++i) blob(To::kLapic, "apic", "lvt", i, 0x320 + 16 * i, 0, 32);  // same order
  blob(To::kLapic, "apic", "initial_count", 0, 0x380, 0, 32);
  blob(To::kLapic, "apic", "divide_conf", 0, 0x3e0, 0, 32);

  // VM level.
  const std::pair<const char*, const char*> pic[] = {
      {"last_irr", "lastIrr"},     {"irr", "irr"},
      {"imr", "imr"},              {"isr", "isr"},
      {"priority_add", "priorityAdd"}, {"irq_base", "irqBase"},
      {"read_reg_select", "readReg"},  {"poll", "pollMode"},
      {"special_mask", "specialMask"}, {"init_state", "initState"},
      {"auto_eoi", "autoEoi"},     {"rotate_on_auto_eoi", "rotateOnAutoEoi"},
      {"special_fully_nested_mode", "specialFullyNested"}, {"init4", "init4"},
      {"elcr", "elcr"}};
  for (auto [q, v] : pic) {
    vm("i8259", 0, q, 0, std::string("picMaster.") + v);
    vm("i8259", 1, q, 0, std::string("picSlave.") + v);
  }
  vm("ioapic", 0, "id", 0, "ioapic.id");
  vm("ioapic", 0, "ioregsel", 0, "ioapic.ioregsel");
  vm("ioapic", 0, "irr", 0, "ioapic.irr");
  for (uint32_t i = 0; i < 24; ++i) vm("ioapic", 0, "ioredtbl", i, "ioapic.redirtbl[" + std::to_string(i) + "]");
  const std::pair<const char*, const char*> ch[] = {
      {"count", "count"},         {"latched_count", "latchedCount"}, {"count_latched", "countLatched"},
      {"status_latched", "statusLatched"}, {"status", "status"},     {"read_state", "readState"},
      {"write_state", "writeState"}, {"write_latch", "writeLatch"},  {"rw_mode", "rwMode"},
      {"mode", "mode"},           {"bcd", "bcd"},                   {"gate", "gate"}};
  for (uint32_t i = 0; i < 3; ++i) {
    for (auto [q, v] : ch) {
      vm("i8254", 0, "channels[" + std::to_string(i) + "]." + q, 0,
         "pit.channels[" + std::to_string(i) + "]." + v);
    }
  }
  vm("kvmclock", 0, "clock", 0, "clock.clock");
  return t;
}

const std::vector<Row>& Table() {
  static const std::vector<Row> table = BuildTable();
  return table;
}

// QEMU fields no row fills whose reset value is not zero: export starts from
// these, so the destination does not load a zero it never had.
struct Default {
  const char* section;
  const char* field;
  uint64_t value;
};
constexpr Default kDefaults[] = {
    {"cpu", "env.a20_mask", 0xffffffff},  // all address lines on
    {"cpu", "env.smbase", 0x30000},
    {"cpu", "env.pat", 0x0007040600070406},
    {"cpu", "env.poll_control_msr", 1},
    {"cpu", "env.fpuc", 0x37f},
    {"cpu", "env.mxcsr", 0x1f80},
    {"cpu", "env.interrupt_injected", 0xffffffff},  // -1: none
    {"cpu", "env.exception_nr", 0xffffffff},        // -1: none
    {"cpu", "env.hflags2", 1},                      // HF2_GIF: interrupts are not held back
};

// ---------------------------------------------------------------------------
// Paths into the manifest through Cap'n Proto's reflection.

struct Step {
  std::string name;
  int index = -1;
};

std::vector<Step> Split(const std::string& path) {
  std::vector<Step> out;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    Step s;
    size_t br = part.find('[');
    if (br != std::string::npos) {
      s.index = std::stoi(part.substr(br + 1));
      part.resize(br);
    }
    s.name = part;
    out.push_back(s);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return out;
}

uint64_t ValueOf(capnp::DynamicValue::Reader v) {
  switch (v.getType()) {
    case capnp::DynamicValue::BOOL: return v.as<bool>() ? 1 : 0;
    case capnp::DynamicValue::UINT: return v.as<uint64_t>();
    case capnp::DynamicValue::INT: return static_cast<uint64_t>(v.as<int64_t>());
    default: return 0;
  }
}

uint64_t GetPath(capnp::DynamicStruct::Reader s, const std::string& path) {
  auto steps = Split(path);
  for (size_t i = 0; i + 1 < steps.size(); ++i) {
    if (steps[i].index >= 0) {
      auto list = s.get(steps[i].name).as<capnp::DynamicList>();
      if (static_cast<unsigned>(steps[i].index) >= list.size()) return 0;
      s = list[steps[i].index].as<capnp::DynamicStruct>();
    } else {
      s = s.get(steps[i].name).as<capnp::DynamicStruct>();
    }
  }
  const Step& last = steps.back();
  if (last.index >= 0) {
    auto list = s.get(last.name).as<capnp::DynamicList>();
    return static_cast<unsigned>(last.index) < list.size() ? ValueOf(list[last.index]) : 0;
  }
  return ValueOf(s.get(last.name));
}

unsigned WidthOf(capnp::Type t) {
  switch (t.which()) {
    case capnp::schema::Type::BOOL: return 1;
    case capnp::schema::Type::UINT8: return 8;
    case capnp::schema::Type::UINT16: return 16;
    case capnp::schema::Type::UINT32: return 32;
    default: return 64;
  }
}

capnp::DynamicValue::Reader Typed(capnp::Type t, uint64_t v) {
  if (t.which() == capnp::schema::Type::BOOL) return v != 0;
  return v & Mask(WidthOf(t));
}

// Read-modify-write of bits [shift, shift+width) of the value at `path`.
void SetPath(capnp::DynamicStruct::Builder s, const std::string& path, uint64_t bits, unsigned shift, unsigned width) {
  auto steps = Split(path);
  for (size_t i = 0; i + 1 < steps.size(); ++i) {
    if (steps[i].index >= 0) {
      s = s.get(steps[i].name).as<capnp::DynamicList>()[steps[i].index].as<capnp::DynamicStruct>();
    } else {
      s = s.get(steps[i].name).as<capnp::DynamicStruct>();
    }
  }
  const Step& last = steps.back();
  uint64_t m = Mask(width) << shift;
  if (last.index >= 0) {
    auto list = s.get(last.name).as<capnp::DynamicList>();
    uint64_t old = ValueOf(list.asReader()[last.index]);
    list.set(last.index, Typed(list.getSchema().getElementType(), (old & ~m) | ((bits << shift) & m)));
  } else {
    uint64_t old = ValueOf(s.asReader().get(last.name));
    auto field = s.getSchema().getFieldByName(last.name);
    s.set(last.name, Typed(field.getType(), (old & ~m) | ((bits << shift) & m)));
  }
}

uint64_t LoadLe(const std::vector<uint8_t>& b, uint32_t at) {
  uint64_t v = 0;
  for (unsigned i = 0; i < 8 && at + i < b.size(); ++i) v |= uint64_t{b[at + i]} << (8 * i);
  return v;
}
void StoreLe(std::vector<uint8_t>& b, uint32_t at, uint64_t v) {
  for (unsigned i = 0; i < 8 && at + i < b.size(); ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// ---------------------------------------------------------------------------
// Import.

// KVM_MP_STATE_*, KVM_VCPUEVENT_VALID_*.
constexpr uint32_t kMpRunnable = 0, kMpInitReceived = 2, kMpHalted = 3;
constexpr uint32_t kEventsValidNmiPending = 1, kEventsValidSipi = 2, kEventsValidShadow = 4;
constexpr uint32_t kDescP = 1u << 15;

struct VcpuImport {
  std::vector<uint8_t> xsave = std::vector<uint8_t>(4096, 0);
  std::vector<uint8_t> lapic = std::vector<uint8_t>(1024, 0);
  std::map<uint32_t, uint64_t> msrs;
};

// Applies every row whose section `s` is (vCPU rows with the vCPU's sections).
void ImportRows(const DeviceSection& s, bool per_vcpu, capnp::DynamicStruct::Builder target, VcpuImport* blobs) {
  for (const Row& r : Table()) {
    if (r.section != s.idstr || PerVcpu(r.section) != per_vcpu) continue;
    if (!per_vcpu && r.instance != s.instance) continue;
    if (!s.Has(r.field)) continue;
    uint64_t v = (s.U(r.field, r.element) >> r.qshift) & Mask(r.width);
    switch (r.to) {
      case To::kVcpu:
      case To::kVm:
        SetPath(target, r.path, v, 0, 64);
        break;
      case To::kMsr:
        if (!(r.flags & kNonZero) || v != 0) blobs->msrs[r.where] = v;
        break;
      case To::kXsave:
      case To::kLapic: {
        auto& b = r.to == To::kXsave ? blobs->xsave : blobs->lapic;
        uint64_t m = Mask(r.width) << r.vshift;
        StoreLe(b, r.where, (LoadLe(b, r.where) & ~m) | ((v << r.vshift) & m));
        break;
      }
    }
  }
}

uint32_t PhysBits(const std::vector<CpuidLeaf>& cpuid) {
  for (const auto& e : cpuid) {
    if (e.function == 0x80000008 && (e.eax & 0xff) != 0) return e.eax & 0xff;
  }
  return 36;
}

Status PutVcpu(const Stream& s, uint32_t index, uint32_t count, const ImportOptions& opt,
               sx::Vcpu::Builder v, std::set<std::string>& warn, std::set<std::string>& mapped) {
  const DeviceSection* cpu = s.Find("cpu", index);
  if (!cpu) return Status::Corruption("the stream has no 'cpu' section for vCPU " + std::to_string(index));
  if (cpu->version != 12) {
    return Status::Unsupported("section 'cpu' instance " + std::to_string(index) + " at offset " +
                               std::to_string(cpu->stream_offset) + " has version " + std::to_string(cpu->version) +
                               ", which is not supported (only version 12 is mapped)");
  }
  mapped.insert("cpu#" + std::to_string(index));
  const DeviceSection* apic = s.Find("apic", index);
  if (apic) mapped.insert("apic#" + std::to_string(index));
  const DeviceSection* common = s.Find("cpu_common", index);
  if (common) mapped.insert("cpu_common#" + std::to_string(index));

  v.initRegs();
  auto sr = v.initSregs();
  sr.initInterruptBitmap(4);
  v.initDebugregs();
  v.initXcrs(1)[0].setXcr(0);
  v.initEvents();
  VcpuImport blobs;
  auto dyn = capnp::toDynamic(v);
  ImportRows(*cpu, true, dyn, &blobs);
  if (apic) ImportRows(*apic, true, dyn, &blobs);

  // What the rows cannot say.
  for (auto seg : {sr.getCs(), sr.getDs(), sr.getEs(), sr.getFs(), sr.getGs(), sr.getSs(), sr.getTr(), sr.getLdt()}) {
    seg.setUnusable(seg.getPresent() ? 0 : 1);
  }
  uint64_t apic_base = apic ? sr.getApicBase() : (0xfee00000ull | 0x800 | (index == 0 ? 0x100 : 0));
  sr.setApicBase(apic_base);
  int32_t injected_irq = static_cast<int32_t>(cpu->U("env.interrupt_injected"));
  auto ev = v.getEvents();
  if (injected_irq >= 0 && injected_irq < 256) {
    sr.getInterruptBitmap().set(injected_irq / 64, 1ull << (injected_irq % 64));
    ev.getInterrupt().setInjected(1);
    ev.getInterrupt().setNr(static_cast<uint8_t>(injected_irq));
  }
  int32_t exc = static_cast<int32_t>(cpu->U("env.exception_nr"));
  if (exc >= 0 && exc < 32) {
    ev.getException().setInjected(1);
    ev.getException().setNr(static_cast<uint8_t>(exc));
    if (ev.getException().getHasErrorCode()) warn.insert("an exception's error code is not in QEMU's stream: it is restored as 0");
  } else {
    ev.getException().setHasErrorCode(0);
  }
  if (ev.getInterrupt().getShadow()) warn.insert("interrupt shadow: QEMU does not say whether STI or MOV SS caused it");
  if (ev.getSmi().getSmm()) warn.insert("the vCPU was in SMM: SMM state is not mapped");
  ev.getSmi().setSmm(0);
  ev.setFlags(kEventsValidNmiPending | kEventsValidSipi | kEventsValidShadow);
  // KVM saves mp_state; under TCG only cpu_common.halted says anything.
  if (v.getMpState() == kMpRunnable && common && common->U("halted")) {
    bool bsp = (apic_base & 0x100) != 0;
    v.setMpState((!bsp && !(sr.getCr0() & 1)) ? kMpInitReceived : kMpHalted);
  }

  uint64_t xcr0 = v.getXcrs()[0].getValue();
  if (!(xcr0 & 1)) xcr0 = 1;  // x87 is always enabled; QEMU leaves 0 without XSAVE
  v.getXcrs()[0].setValue(xcr0);
  StoreLe(blobs.xsave, 28, (LoadLe(blobs.xsave, 28) & ~0xffffffffull) | 0xffff);  // MXCSR_MASK as KVM reports it
  // x87 and SSE state are always meaningful in QEMU's fields; a clear bit
  // would make KVM load them at their init values instead.
  StoreLe(blobs.xsave, 512, (LoadLe(blobs.xsave, 512) | 3) & (xcr0 | 3));
  v.setXsave(capnp::Data::Reader(blobs.xsave.data(), blobs.xsave.size()));
  if (cpu->HasSubsection("cpu/avx512") || cpu->HasSubsection("cpu/pkru") || cpu->HasSubsection("cpu/amx")) {
    warn.insert("AVX-512, PKRU and AMX state of the QEMU vCPU is not mapped (lost)");
  }

  if (apic) {
    StoreLe(blobs.lapic, 0x30, 0x50014);  // version 0x14, 6 LVT entries, as KVM's LAPIC reports
    StoreLe(blobs.lapic, 0xe0, LoadLe(blobs.lapic, 0xe0) | 0x0fffffff);  // DFR's reserved bits read as ones
    if (apic->U("initial_count") != 0) {
      warn.insert("LAPIC timer: QEMU saves no current count; the timer restarts from its initial count");
    }
  } else {
    warn.insert("no 'apic' section: the local APIC starts at its reset state");
  }
  v.setLapic(capnp::Data::Reader(blobs.lapic.data(), blobs.lapic.size()));

  // KVM refuses variable-MTRR bits above the physical-address width; QEMU may carry them.
  uint64_t phys_mask = ((1ull << PhysBits(opt.cpuid)) - 1) | 0xfff;
  for (uint32_t m = 0x200; m < 0x210; ++m) {
    if (blobs.msrs.count(m)) blobs.msrs[m] &= phys_mask;
  }
  bool mce = cpu->U("env.mcg_ctl") != 0;
  for (uint32_t i = 0; i < 40; ++i) mce |= cpu->U("env.mce_banks", i) != 0;
  if (mce) warn.insert("machine-check state (MCG_CTL, MCE banks) is not mapped: KVM refuses QEMU's MCG_CTL = ~0");
  auto ml = v.initMsrs(static_cast<unsigned>(blobs.msrs.size()));
  unsigned mi = 0;
  for (auto [idx, val] : blobs.msrs) {
    ml[mi].setIndex(idx);
    ml[mi].setValue(val);
    ++mi;
  }

  auto cl = v.initCpuid(static_cast<unsigned>(opt.cpuid.size()));
  for (unsigned i = 0; i < opt.cpuid.size(); ++i) {
    CpuidLeaf e = opt.cpuid[i];
    if (e.function == 1) {
      e.ebx = (e.ebx & 0x0000ffffu) | (count << 16) | (index << 24);
      e.ecx |= 1u << 31;
    }
    if (e.function == 0xb || e.function == 0x1f) e.edx = index;
    cl[i].setFunction(e.function);
    cl[i].setIndex(e.index);
    cl[i].setFlags(e.flags);
    cl[i].setEax(e.eax);
    cl[i].setEbx(e.ebx);
    cl[i].setEcx(e.ecx);
    cl[i].setEdx(e.edx);
  }
  return Status::Ok();
}

bool AllZero(const std::vector<uint8_t>& v) {
  return std::all_of(v.begin(), v.end(), [](uint8_t b) { return b == 0; });
}

// ---------------------------------------------------------------------------
// Export.

// QEMU's hflags bits (target/i386/cpu.h), which TCG trusts as they are
// loaded: they must agree with the segments and control registers.
constexpr uint32_t kHfCs32 = 1u << 4, kHfSs32 = 1u << 5, kHfAddseg = 1u << 6, kHfPe = 1u << 7,
                   kHfLma = 1u << 14, kHfCs64 = 1u << 15, kHfOsfxsr = 1u << 22, kHfSmap = 1u << 23,
                   kHfUmip = 1u << 27, kHfAvxEn = 1u << 28;
uint32_t Hflags(sx::Vcpu::Reader v) {
  auto sr = v.getSregs();
  uint64_t cr0 = sr.getCr0(), cr4 = sr.getCr4(), efer = sr.getEfer();
  uint32_t h = sr.getSs().getDpl() & 3;
  if (cr0 & 1) h |= kHfPe;
  h |= static_cast<uint32_t>((cr0 >> 1) & 7) << 9;  // MP, EM, TS
  if (efer & (1u << 10)) h |= kHfLma;
  if (cr4 & (1u << 9)) h |= kHfOsfxsr;
  if (cr4 & (1u << 21)) h |= kHfSmap;
  if (cr4 & (1u << 11)) h |= kHfUmip;
  uint64_t xcr0 = v.getXcrs().size() ? v.getXcrs()[0].getValue() : 1;
  if ((cr4 & (1u << 18)) && (xcr0 & 4)) h |= kHfAvxEn;
  if ((h & kHfLma) && sr.getCs().getL()) {
    h |= kHfCs32 | kHfSs32 | kHfCs64;
  } else {
    if (sr.getCs().getDb()) h |= kHfCs32;
    if (sr.getSs().getDb()) h |= kHfSs32;
    bool vm86 = (v.getRegs().getRflags() >> 17) & 1;
    if (!(h & kHfPe) || vm86 || !(h & kHfCs32) ||
        (sr.getDs().getBase() | sr.getEs().getBase() | sr.getSs().getBase()) != 0) {
      h |= kHfAddseg;
    }
  }
  return h;
}

void ApplyDefaults(DeviceSection& s) {
  for (const Default& d : kDefaults) {
    if (s.idstr == d.section) s.Set(d.field, d.value);
  }
  if (s.idstr == "ioapic") {
    // Every redirection entry masked, as QEMU resets an IOAPIC.
    for (uint32_t i = 0; i < 24; ++i) s.Set("ioredtbl", 1ull << 16, i);
  }
}

// Writes every row of section `s` from the manifest.
void ExportRows(DeviceSection& s, bool per_vcpu, capnp::DynamicStruct::Reader src, sx::Vcpu::Reader* vcpu,
                std::set<uint32_t>* msrs_written) {
  std::map<uint32_t, uint64_t> msrs;
  std::vector<uint8_t> xsave, lapic;
  if (vcpu) {
    for (auto m : vcpu->getMsrs()) msrs[m.getIndex()] = m.getValue();
    auto x = vcpu->getXsave();
    xsave.assign(x.begin(), x.end());
    xsave.resize(4096, 0);
    auto l = vcpu->getLapic();
    lapic.assign(l.begin(), l.end());
    lapic.resize(1024, 0);
  }
  for (const Row& r : Table()) {
    if (r.dir == kImportOnly || r.section != s.idstr || PerVcpu(r.section) != per_vcpu) continue;
    if (!per_vcpu && r.instance != s.instance) continue;
    if (!s.Has(r.field)) continue;
    uint64_t v = 0;
    switch (r.to) {
      case To::kVcpu:
      case To::kVm:
        v = GetPath(src, r.path);
        break;
      case To::kMsr: {
        auto it = msrs.find(r.where);
        if (it == msrs.end()) continue;  // the field keeps its reset value
        v = it->second;
        msrs_written->insert(r.where);
        break;
      }
      case To::kXsave:
      case To::kLapic:
        v = LoadLe(r.to == To::kXsave ? xsave : lapic, r.where) >> r.vshift;
        break;
    }
    uint64_t m = Mask(r.width) << r.qshift;
    s.Set(r.field, (s.U(r.field, r.element) & ~m) | ((v << r.qshift) & m), r.element);
  }
}

Status ExportVcpu(sx::Vcpu::Reader v, DeviceSection& s, std::set<std::string>& warn) {
  auto dyn = capnp::toDynamic(v);
  std::set<uint32_t> msrs_written;
  if (s.idstr == "cpu") {
    // Derived state first; the rows then set the bits they own.
    s.Set("env.hflags", Hflags(v));
    ExportRows(s, true, dyn, &v, &msrs_written);
    auto sr = v.getSregs();
    const std::pair<const char*, sx::Segment::Reader> segs[] = {
        {"env.segs[0].flags", sr.getEs()}, {"env.segs[1].flags", sr.getCs()}, {"env.segs[2].flags", sr.getSs()},
        {"env.segs[3].flags", sr.getDs()}, {"env.segs[4].flags", sr.getFs()}, {"env.segs[5].flags", sr.getGs()},
        {"env.ldt.flags", sr.getLdt()},    {"env.tr.flags", sr.getTr()}};
    for (auto [f, seg] : segs) {
      // KVM reports an unusable segment with its other attributes; QEMU
      // knows only "not present".
      if (seg.getUnusable()) s.Set(f, s.U(f) & ~kDescP);
    }
    auto ev = v.getEvents();
    s.Set("env.interrupt_injected", ev.getInterrupt().getInjected() ? ev.getInterrupt().getNr() : 0xffffffffu);
    bool exc = ev.getException().getInjected() || ev.getException().getPending();
    s.Set("env.exception_nr", exc ? ev.getException().getNr() : 0xffffffffu);
    if (exc && (ev.getException().getHasErrorCode() || ev.getExceptionHasPayload())) {
      warn.insert("an exception's error code and payload have no field in QEMU's cpu section: they are dropped");
    }
    if (ev.getInterrupt().getShadow()) warn.insert("interrupt shadow: QEMU keeps no STI/MOV SS distinction (approximated)");
    if (ev.getSmi().getSmm() || ev.getSmi().getPending()) warn.insert("SMM state is not written (QEMU's SMRAM and SMI state stay at reset)");
    uint64_t bv = s.U("env.xstate_bv");
    if (bv & ~7ull) warn.insert("XSAVE components above AVX (AVX-512, PKRU, AMX, ...) have no field in QEMU's cpu section: dropped");
    std::vector<std::string> dropped;
    for (auto m : v.getMsrs()) {
      uint32_t i = m.getIndex();
      // MCE state: QEMU derives MCG_CAP and the banks from -cpu.
      if (!msrs_written.count(i) && m.getValue() != 0) dropped.push_back(Hex(i));
    }
    if (!dropped.empty()) {
      std::string list;
      for (size_t i = 0; i < dropped.size() && i < 12; ++i) list += (i ? ", " : "") + dropped[i];
      if (dropped.size() > 12) list += ", ...";
      warn.insert("MSRs with no field in QEMU's cpu section are dropped (" + list + ")");
    }
  } else if (s.idstr == "apic") {
    ExportRows(s, true, dyn, &v, &msrs_written);
    // TCG's APIC timer counts with the shift that divide_conf gives.
    uint64_t d = s.U("divide_conf");
    s.Set("count_shift", (((d & 3) | ((d >> 1) & 4)) + 1) & 7);
    if (s.U("initial_count") != 0) {
      warn.insert("LAPIC timer: QEMU takes no current count; the timer restarts from its initial count");
    }
  } else if (s.idstr == "cpu_common") {
    // TCG's only run state; KVM takes env.mp_state.
    uint32_t mp = v.getMpState();
    s.Set("halted", (mp == kMpHalted || mp == kMpInitReceived) ? 1 : 0);
  }
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------------------

Result<Imported> ToManifest(const Stream& s, const ImportOptions& opt, schema::Manifest::Builder m) try {
  Imported out;
  std::set<std::string> warn;
  std::set<std::string> mapped;
  m.setArch(schema::Arch::X8664);
  auto created = m.initCreated();
  created.setToolVersion(opt.tool_version);

  // Memory.
  const RamBlock* ram = s.FindBlock("pc.ram");
  if (!ram) ram = s.FindBlock("microvm.ram");
  if (!ram) return Status::Unsupported("the stream has no 'pc.ram' or 'microvm.ram' RAM block");
  uint64_t size = ram->data.size();
  uint64_t low = std::min(size, kLowRamEnd);
  const RamBlock* bios = s.machine == "microvm" ? s.FindBlock("pc.bios") : nullptr;
  if (bios && (bios->data.size() > 0x20000 || bios->data.size() % kPageSize != 0 || low < 0x100000)) bios = nullptr;
  if (bios) {
    // On microvm the last 64-128 KiB below 1 MiB show the BIOS block, not RAM.
    uint64_t at = 0x100000 - bios->data.size();
    out.memory.push_back({ram, 0, 0, at});
    out.memory.push_back({bios, 0, at, bios->data.size()});
    out.memory.push_back({ram, 0x100000, 0x100000, low - 0x100000});
    mapped.insert("ram:" + bios->name);
  } else {
    out.memory.push_back({ram, 0, 0, low});
  }
  if (size > low) out.memory.push_back({ram, low, kHighRamStart, size - low});
  mapped.insert("ram:" + ram->name);
  auto regions = m.initMemory();
  regions.setPageSize(4096);
  auto rl = regions.initRegions(size > low ? 2 : 1);
  rl[0].setSlot(0);
  rl[0].setGuestPhysAddr(0);
  rl[0].setSize(low);
  rl[0].setName("ram-low");
  if (size > low) {
    rl[1].setSlot(1);
    rl[1].setGuestPhysAddr(kHighRamStart);
    rl[1].setSize(size - low);
    rl[1].setName("ram-high");
  }

  // vCPUs: one 'cpu' section per vCPU, instance = index.
  uint32_t count = 0;
  while (s.Find("cpu", count)) ++count;
  if (count == 0) return Status::Corruption("the stream has no 'cpu' section");
  auto vcpus = m.initVcpus(count);
  for (uint32_t i = 0; i < count; ++i) {
    vcpus[i].setId(i);
    VMSNAP_RETURN_IF_ERROR(PutVcpu(s, i, count, opt, vcpus[i].initX8664(), warn, mapped));
  }

  // VM level. The configuration is vmsnap's own.
  auto vm = m.initVm().initX8664();
  auto cfg = vm.initConfig();
  cfg.setTssAddr(0xfffbd000);
  cfg.setIdentityMapAddr(0xfffbc000);
  cfg.setIrqchip(true);
  cfg.setPit(true);
  cfg.setPitFlags(1);  // KVM_PIT_SPEAKER_DUMMY, as vmsnap's VMM creates it
  const DeviceSection* pic0 = s.Find("i8259", 0);
  const DeviceSection* pic1 = s.Find("i8259", 1);
  const DeviceSection* io = s.Find("ioapic", 0);
  const DeviceSection* pit = s.Find("i8254", 0);
  const DeviceSection* kc = s.Find("kvmclock", 0);
  if (pic0 && pic1) {
    vm.initPicMaster();
    vm.initPicSlave();
  }
  if (io) vm.initIoapic().initRedirtbl(24);
  if (pit) vm.initPit().initChannels(3);
  if (kc) vm.initClock();
  auto dyn = capnp::toDynamic(vm);
  for (const DeviceSection* d : {pic0 && pic1 ? pic0 : nullptr, pic0 && pic1 ? pic1 : nullptr, io, pit, kc}) {
    if (!d) continue;
    ImportRows(*d, false, dyn, nullptr);
    mapped.insert(d->idstr + "#" + std::to_string(d->instance));
  }
  if (pic0 && pic1) {
    vm.getPicMaster().setElcrMask(0xf8);  // KVM's fixed ELCR masks
    vm.getPicSlave().setElcrMask(0xde);
    // QEMU's PIT drives IRQ0 as a level it raises and lowers; KVM's PIT only
    // pulses it. A saved last_irr bit 0 makes KVM's PIC see no new edge, so
    // the in-kernel PIT would never interrupt again.
    vm.getPicMaster().setLastIrr(vm.getPicMaster().getLastIrr() & 0xfe);
    if (AllZero(pic0->data) && AllZero(pic1->data)) {
      warn.insert("the i8259 sections are all zero (QEMU's in-kernel irqchip does not save the PIC): PIC state cannot be trusted");
    }
  } else {
    warn.insert("no i8259 sections: the PICs start at their reset state");
  }
  if (io) vm.getIoapic().setBaseAddress(0xfec00000);
  if (pit) warn.insert("PIT: QEMU's count-load times are virtual-clock times; each channel restarts its count on load");

  // Everything else, as QEMU wrote it.
  std::vector<const DeviceSection*> rest;
  for (const auto& d : s.sections) {
    if (!mapped.count(d.idstr + "#" + std::to_string(d.instance))) rest.push_back(&d);
  }
  std::vector<const RamBlock*> other_blocks;
  for (const auto& b : s.blocks) {
    if (mapped.count("ram:" + b.name)) continue;
    // Kept whole in the manifest: ROMs and video memory are small; a larger
    // block would be guest RAM vmsnap does not know how to place.
    if (b.data.size() > kMaxOtherBlock) {
      return Status::Unsupported("RAM block '" + b.name + "' of " + std::to_string(b.data.size()) +
                                 " bytes is not guest RAM, and only blocks up to " +
                                 std::to_string(kMaxOtherBlock >> 20) + " MiB are kept as device records");
    }
    other_blocks.push_back(&b);
  }
  auto devs = m.initDevices(static_cast<unsigned>(rest.size() + other_blocks.size() + 2));
  unsigned di = 0;
  devs[di].setName("qemu:machine");
  devs[di].setData(capnp::Data::Reader(reinterpret_cast<const uint8_t*>(s.machine.data()), s.machine.size()));
  ++di;
  devs[di].setName("qemu:vmdesc");
  devs[di].setData(capnp::Data::Reader(reinterpret_cast<const uint8_t*>(s.vmdesc.data()), s.vmdesc.size()));
  ++di;
  for (const DeviceSection* d : rest) {
    devs[di].setName("qemu:" + d->idstr + ":" + std::to_string(d->instance));
    devs[di].setVersion(d->version);
    devs[di].setData(capnp::Data::Reader(d->data.data(), d->data.size()));
    ++di;
  }
  for (const RamBlock* b : other_blocks) {
    devs[di].setName("qemu-ram:" + b->name);
    devs[di].setData(capnp::Data::Reader(b->data.data(), b->data.size()));
    ++di;
  }

  warn.insert("CPUID is not in QEMU's stream: taken from " + opt.cpuid_source);
  out.warnings.assign(warn.begin(), warn.end());
  return out;
} catch (const kj::Exception& e) {
  return Status::Corruption("QEMU import: a value does not fit vmsnap's field: " + std::string(e.getDescription().cStr()));
}

namespace {

std::string DataString(capnp::Data::Reader d) { return std::string(d.begin(), d.end()); }

}  // namespace

Result<Exported> FromManifest(schema::Manifest::Reader m, const ReadGuest& read, const ExportOptions& options,
                              const StreamSink& out) try {
  if (m.getArch() != schema::Arch::X8664) {
    return Status::WrongArch("QEMU export needs an x86_64 snapshot; this one is another architecture");
  }
  Exported result;
  std::set<std::string> warn;
  std::map<std::string, capnp::Data::Reader> records;
  for (auto d : m.getDevices()) records.emplace(d.getName().cStr(), d.getData());
  const bool from_qemu = records.count("qemu:vmdesc") && records.count("qemu:machine");
  std::string machine = options.machine;
  if (machine.empty()) machine = from_qemu ? DataString(records.at("qemu:machine")) : "microvm";
  const bool microvm = machine == "microvm";
  if (from_qemu && machine != DataString(records.at("qemu:machine"))) {
    return Status::InvalidArgument("the snapshot was imported from QEMU machine '" +
                                   DataString(records.at("qemu:machine")) + "', not '" + machine +
                                   "': its sections only fit that machine");
  }
  if (!from_qemu && !microvm) {
    return Status::Unsupported("--machine " + machine + ": only microvm is supported for snapshots not imported from QEMU");
  }
  uint32_t ncpu = m.getVcpus().size();
  if (ncpu == 0) return Status::InvalidArgument("the snapshot has no vCPUs");
  for (auto v : m.getVcpus()) {
    if (!v.isX8664()) return Status::WrongArch("vCPU " + std::to_string(v.getId()) + " is not an x86_64 vCPU");
  }

  // Which sections, from which description: an import's own list, in its
  // order; otherwise the smallest set microvm resumes from (a section the
  // destination has and the stream lacks stays at its reset state).
  std::string vmdesc = from_qemu ? DataString(records.at("qemu:vmdesc")) : std::string(kMicrovmVmdesc);
  std::vector<SectionPick> list;
  if (from_qemu) {
    VMSNAP_ASSIGN_OR_RETURN(auto names, DescribedSections(vmdesc));
    for (auto& [id, inst] : names) list.push_back({id, inst, inst});
  } else {
    list.push_back({"timer", 0, 0});
    for (uint32_t i = 0; i < ncpu; ++i) {
      list.push_back({"cpu_common", 0, i});
      list.push_back({"cpu", 0, i});
      list.push_back({"apic", 0, i});
    }
    list.push_back({"ioapic", 0, 0});
    list.push_back({"ioapic", 1, 1});
    list.push_back({"i8259", 0, 0});
    list.push_back({"i8259", 1, 1});
    list.push_back({"i8254", 0, 0});
    list.push_back({"globalstate", 0, 0});
  }
  VMSNAP_ASSIGN_OR_RETURN(Layout layout, LayoutSections(vmdesc, list));

  auto vmr = m.getVm().isX8664() ? m.getVm().getX8664() : sx::Vm::Reader();
  auto vm_dyn = capnp::toDynamic(vmr);
  std::vector<DeviceSection> sections;
  for (DeviceSection& s : layout.sections) {
    std::string key = "qemu:" + s.idstr + ":" + std::to_string(s.instance);
    bool per_vcpu = PerVcpu(s.idstr);
    if (per_vcpu && s.instance >= ncpu) {
      return Status::InvalidArgument("the QEMU description has section '" + s.idstr + "' instance " +
                                     std::to_string(s.instance) + " but the snapshot has " +
                                     std::to_string(ncpu) + " vCPUs");
    }
    ApplyDefaults(s);
    if (auto it = records.find(key); it != records.end()) {
      // Came from QEMU: back as it was.
      if (it->second.size() != s.data.size()) {
        return Status::Corruption("device record '" + key + "' has " + std::to_string(it->second.size()) +
                                  " bytes; its QEMU description says " + std::to_string(s.data.size()));
      }
      s.data.assign(it->second.begin(), it->second.end());
    } else if (per_vcpu) {
      VMSNAP_RETURN_IF_ERROR(ExportVcpu(m.getVcpus()[s.instance].getX8664(), s, warn));
    } else if (s.idstr == "i8259" || (s.idstr == "ioapic" && s.instance == 0) || s.idstr == "i8254" ||
               s.idstr == "kvmclock") {
      bool have = (s.idstr == "i8259" && vmr.hasPicMaster()) || (s.idstr == "ioapic" && vmr.hasIoapic()) ||
                  (s.idstr == "i8254" && vmr.hasPit()) || (s.idstr == "kvmclock" && vmr.hasClock());
      if (have) ExportRows(s, false, vm_dyn, nullptr, nullptr);
      if (s.idstr == "i8254") warn.insert("PIT: each channel restarts its count when QEMU loads it (load times are QEMU virtual-clock times)");
    } else if (s.idstr == "globalstate") {
      // The VM was stopped when it was saved: QEMU waits for `cont`.
      static const char kPaused[] = "paused";
      s.Set("size", sizeof kPaused);
      auto f = s.fields.find("runstate");
      if (f != s.fields.end()) std::memcpy(&s.data[f->second.offset], kPaused, sizeof kPaused);
    } else if (s.idstr == "timer" || s.idstr == "ioapic") {
      // QEMU's virtual clock starts again at 0, which the PIT and APIC timer
      // fields (also 0) agree with; the second IOAPIC of microvm is vmsnap's
      // unused one, left at reset.
    } else {
      warn.insert("QEMU section '" + s.idstr + "' has no device record: written at zero");
    }
    sections.push_back(std::move(s));
  }
  if (!from_qemu) {
    if (vmr.hasClock()) warn.insert("kvmclock: not written (a TCG destination has no such section); a KVM destination starts it from its own clock");
    std::vector<std::string> others;
    for (auto& [name, data] : records) others.push_back(name);
    if (!others.empty()) {
      std::string names;
      for (size_t i = 0; i < others.size() && i < 6; ++i) names += (i ? ", " : "") + others[i];
      warn.insert("device records with no QEMU section are dropped (" + names + ")");
    }
  }
  warn.insert("CPUID is not in QEMU's stream: the destination builds it from its -cpu option");

  // RAM blocks.
  std::vector<RamSource> ram;
  std::vector<std::pair<uint64_t, uint64_t>> regions;  // gpa, size
  for (auto r : m.getMemory().getRegions()) regions.emplace_back(r.getGuestPhysAddr(), r.getSize());
  std::sort(regions.begin(), regions.end());
  uint64_t low = 0, high = 0;
  for (auto [gpa, size] : regions) {
    if (gpa == low && gpa < kLowRamEnd) low += size;
    else if (gpa == kHighRamStart + high) high += size;
    else return Status::Unsupported("guest memory region at " + Hex(gpa) + " does not fit QEMU's RAM layout (RAM from 0 and above 4 GiB)");
  }
  if (low > kLowRamEnd || (high && low != kLowRamEnd)) {
    return Status::Unsupported("guest RAM below 4 GiB is " + Hex(low) + " bytes; QEMU puts RAM above 4 GiB only after 3 GiB below");
  }
  std::string main_block = microvm ? "microvm.ram" : "pc.ram";
  ram.push_back({main_block, low + high, [read, low](uint64_t off, uint64_t len, uint8_t* p) -> Status {
                   // The block is low RAM, then high RAM from 4 GiB.
                   while (len) {
                     uint64_t gpa = off < low ? off : off - low + kHighRamStart;
                     uint64_t n = off < low ? std::min(len, low - off) : len;
                     VMSNAP_RETURN_IF_ERROR(read(gpa, n, p));
                     off += n;
                     p += n;
                     len -= n;
                   }
                   return Status::Ok();
                 }});
  if (microvm) {
    // microvm shows its writable BIOS block at 0xf0000-0xfffff, over RAM:
    // what the guest saw there goes into that block.
    const uint64_t size = 0x10000;
    if (low >= 0x100000) {
      ram.push_back({"pc.bios", size, [read, size](uint64_t off, uint64_t len, uint8_t* p) {
                       return read(0x100000 - size + off, len, p);
                     }});
    }
  }
  for (auto& [name, data] : records) {
    if (name.rfind("qemu-ram:", 0) != 0 || name == "qemu-ram:pc.bios") continue;
    capnp::Data::Reader d = data;
    ram.push_back({name.substr(9), d.size(), [d](uint64_t off, uint64_t len, uint8_t* p) {
                     std::memcpy(p, d.begin() + off, len);
                     return Status::Ok();
                   }});
  }

  VMSNAP_RETURN_IF_ERROR(WriteStream(machine, ram, sections, layout.vmdesc, out));
  result.warnings.assign(warn.begin(), warn.end());
  return result;
} catch (const kj::Exception& e) {
  return Status::Corruption("QEMU export: the snapshot does not fit the mapping: " + std::string(e.getDescription().cStr()));
}

}  // namespace vmsnap::interop::qemu
