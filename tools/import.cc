// SPDX-License-Identifier: MIT
// vmsnap import qemu: convert a VM saved by QEMU (a migration stream, a qcow2
// internal snapshot, a libvirt save image) into a .vmsnap snapshot.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "base/fd.h"
#include "format/chain.h"
#include "format/compression_spec.h"
#include "format/writer.h"
#include "interop/qemu_container.h"
#include "interop/qemu_stream.h"
#include "interop/qemu_x86.h"
#include "tools/command.h"
#include "tools/progress.h"
#include "tools/tool_util.h"

#ifdef VMSNAP_HAVE_X86_KVM
#include "kvm/kvm.h"
#include "kvm/x86_64/x86.h"
#endif

namespace vmsnap::cli {
namespace {

namespace iq = interop::qemu;

struct ImportArgs {
  std::string kind, input, output, snapshot, cpuid_from;
};

Result<std::vector<uint8_t>> ReadWhole(const std::string& path) {
  const UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno(errno, "cannot open " + path);
  std::vector<uint8_t> data;
  struct stat st {};
  if (::fstat(fd.get(), &st) == 0 && S_ISREG(st.st_mode)) data.reserve(static_cast<size_t>(st.st_size));
  uint8_t buf[1 << 16];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "cannot read " + path);
    if (n == 0) break;
    data.insert(data.end(), buf, buf + n);
  }
  return data;
}

Result<std::vector<iq::CpuidLeaf>> CpuidFromSnapshot(const std::string& path) {
  VMSNAP_ASSIGN_OR_RETURN(SnapshotChain chain, SnapshotChain::Open(path));
  auto m = chain.leaf().manifest();
  if (m.getArch() != schema::Arch::X8664 || m.getVcpus().size() == 0 || !m.getVcpus()[0].isX8664()) {
    return Status::InvalidArgument("--cpuid-from " + path + ": not an x86_64 snapshot with vCPUs");
  }
  std::vector<iq::CpuidLeaf> out;
  for (auto e : m.getVcpus()[0].getX8664().getCpuid()) {
    out.push_back({e.getFunction(), e.getIndex(), e.getFlags(), e.getEax(), e.getEbx(), e.getEcx(), e.getEdx()});
  }
  if (out.empty()) return Status::InvalidArgument("--cpuid-from " + path + ": vCPU 0 has no CPUID");
  return out;
}

Result<std::vector<iq::CpuidLeaf>> HostCpuid() {
#ifdef VMSNAP_HAVE_X86_KVM
  VMSNAP_ASSIGN_OR_RETURN(auto system, kvm::System::Open());
  VMSNAP_ASSIGN_OR_RETURN(auto vm, system->CreateVm());
  kvm::x86::RealVmOps ops(vm.get());
  VMSNAP_ASSIGN_OR_RETURN(auto entries, ops.SupportedCpuid());
  std::vector<iq::CpuidLeaf> out;
  for (const auto& e : entries) out.push_back({e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx});
  return out;
#else
  return Status::Unsupported("this build has no x86 KVM to take CPUID from: give --cpuid-from SNAPSHOT");
#endif
}

// Where and when the conversion ran; the QEMU stream records neither.
void FillProvenance(schema::Manifest::Builder m) {
  auto c = m.getCreated();
  struct utsname u {};
  if (::uname(&u) == 0) {
    c.setHostKernel(u.release);
    c.setHostName(u.nodename);
  }
  c.setTimeUnixNs(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::system_clock::now().time_since_epoch()).count());
  auto s = m.initSave();
  s.setRounds(1);
  s.setCompression("zstd:3");
}

int RunImport(const ImportArgs& a) {
  auto fail = [&a](const Status& s) { return tools::Fail("import", a.input, s, kExitError); };
  if (a.kind != "qemu") {
    return fail(Status::InvalidArgument("unknown source '" + a.kind + "' (only 'qemu')"));
  }
  iq::ImportOptions opt;
  opt.tool_version = std::string("vmsnap ") + VMSNAP_VERSION + " (import qemu)";
  if (!a.cpuid_from.empty()) {
    auto c = CpuidFromSnapshot(a.cpuid_from);
    if (!c.ok()) return tools::Fail("import", a.cpuid_from, c.status(), kExitError);
    opt.cpuid = std::move(*c);
    opt.cpuid_source = "--cpuid-from " + a.cpuid_from;
  }
  auto raw = ReadWhole(a.input);
  if (!raw.ok()) return fail(raw.status());
  auto stream_bytes = iq::ExtractStream(*raw, a.input, a.snapshot);
  if (!stream_bytes.ok()) return fail(stream_bytes.status());
  auto stream = iq::ParseStream(stream_bytes->bytes(), stream_bytes->what);
  if (!stream.ok()) return fail(stream.status());
  if (opt.cpuid.empty()) {
    auto c = HostCpuid();
    if (!c.ok()) return fail(c.status().Context("CPUID for the import"));
    opt.cpuid = std::move(*c);
    opt.cpuid_source = "this host's KVM (KVM_GET_SUPPORTED_CPUID)";
  }

  WriterOptions wo;
  auto writer = SnapshotWriter::Create(a.output, wo);
  if (!writer.ok()) return tools::Fail("import", a.output, writer.status(), kExitError);
  auto imported = iq::ToManifest(*stream, opt, (*writer)->manifest());
  if (!imported.ok()) return fail(imported.status());
  FillProvenance((*writer)->manifest());
  for (const iq::RamPiece& p : imported->memory) {
    Status st = (*writer)->AddMemory(p.gpa, p.block->data.data() + p.block_offset, p.size);
    if (!st.ok()) return tools::Fail("import", a.output, st, kExitError);
  }
  Status st = (*writer)->Commit();
  if (!st.ok()) return tools::Fail("import", a.output, st, kExitError);
  if (!tools::Quiet()) {
    for (const std::string& w : imported->warnings) std::fprintf(stderr, "vmsnap import: warning: %s\n", w.c_str());
  }
  std::printf("imported %s (QEMU machine %s, %zu vCPUs) to %s (%llu bytes)\n", stream_bytes->what.c_str(),
              stream->machine.c_str(), static_cast<size_t>((*writer)->manifest().getVcpus().size()),
              a.output.c_str(), static_cast<unsigned long long>((*writer)->file_size()));
  return kExitOk;
}

}  // namespace

void RegisterImport(CLI::App& app, int* exit_code) {
  CLI::App* sub = app.add_subcommand(
      "import", "Convert a VM saved by QEMU (migration stream, qcow2 savevm, libvirt save image) to a snapshot");
  auto a = std::make_shared<ImportArgs>();
  sub->add_option("SOURCE", a->kind, "Where the input comes from: qemu")->required();
  sub->add_option("INPUT", a->input, "The saved VM")->required();
  sub->add_option("-o,--output", a->output, "Snapshot to write (temporary name, then renamed)")->required();
  sub->add_option("--snapshot", a->snapshot, "For a qcow2 image: the internal snapshot (savevm NAME) to import");
  sub->add_option("--cpuid-from", a->cpuid_from,
                  "Take CPUID from this snapshot's vCPU 0 (default: what this host's KVM supports)");
  sub->footer(
      "One warning line is printed per kind of state QEMU's stream lacks or vmsnap approximates "
      "(docs/interop-qemu.md).\nExit status: 0 converted, 2 error (unreadable, truncated, foreign "
      "or unsupported input; the message names the section and stream offset).");
  sub->callback([exit_code, a] { *exit_code = RunImport(*a); });
}

}  // namespace vmsnap::cli
