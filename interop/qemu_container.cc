// SPDX-License-Identifier: MIT
// Locating the migration stream inside its container: see qemu_container.h.
#include "interop/qemu_container.h"

#include <zstd.h>

#include <cstring>

#include "interop/qemu_stream.h"

namespace vmsnap::interop::qemu {
namespace {

uint64_t Be(std::span<const uint8_t> in, uint64_t off, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; ++i) v = (v << 8) | in[off + i];
  return v;
}
uint32_t Le32(std::span<const uint8_t> in, uint64_t off) {
  return in[off] | (uint32_t{in[off + 1]} << 8) | (uint32_t{in[off + 2]} << 16) | (uint32_t{in[off + 3]} << 24);
}

Result<StreamBytes> Libvirt(std::span<const uint8_t> in, const std::string& what) {
  if (in.size() < kLibvirtHeaderSize) return Status::Corruption(what + ": libvirt save image header truncated");
  uint32_t version = Le32(in, 16), xml_len = Le32(in, 20), format = Le32(in, 28);
  if (version != 2) {
    return Status::Unsupported(what + ": libvirt save image version " + std::to_string(version) +
                               " at offset 16 is not supported (only 2)");
  }
  uint64_t start = kLibvirtHeaderSize + uint64_t{xml_len};
  if (start > in.size()) {
    return Status::Corruption(what + ": libvirt save image says " + std::to_string(xml_len) +
                              " bytes of domain XML, more than the file holds");
  }
  StreamBytes out;
  out.what = what + " (libvirt save image)";
  auto payload = in.subspan(start);
  if (format == 0) {
    out.view = payload;
    return out;
  }
  if (format != 5) {
    static const char* names[] = {"raw", "gzip", "bzip2", "xz", "lzop"};
    std::string n = format < 5 ? names[format] : "unknown (" + std::to_string(format) + ")";
    return Status::Unsupported(what + ": libvirt save image compressed with " + n +
                               " is not supported (raw and zstd are); decompress the stream first");
  }
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  if (!dctx) return Status::Internal("zstd: cannot create a decompression context");
  std::vector<uint8_t> buf(ZSTD_DStreamOutSize());
  ZSTD_inBuffer zin{payload.data(), payload.size(), 0};
  size_t last = 1;
  while (zin.pos < zin.size) {
    ZSTD_outBuffer zout{buf.data(), buf.size(), 0};
    last = ZSTD_decompressStream(dctx, &zout, &zin);
    if (ZSTD_isError(last)) {
      std::string err = ZSTD_getErrorName(last);
      ZSTD_freeDCtx(dctx);
      return Status::Corruption(what + ": zstd stream of the libvirt save image at offset " +
                                std::to_string(start + zin.pos) + ": " + err);
    }
    out.owned.insert(out.owned.end(), buf.data(), buf.data() + zout.pos);
    if (out.owned.size() > (64ull << 30)) {
      ZSTD_freeDCtx(dctx);
      return Status::Unsupported(what + ": decompressed stream larger than 64 GiB");
    }
    if (zout.pos == 0 && last != 0 && zin.pos == zin.size) break;
  }
  ZSTD_freeDCtx(dctx);
  if (last != 0) return Status::Corruption(what + ": the zstd stream of the libvirt save image is truncated");
  return out;
}

// qcow2: the VM state of an internal snapshot is stored through the
// snapshot's own L1 table, at the first L1 entry past the guest disk.
Result<StreamBytes> Qcow2(std::span<const uint8_t> in, const std::string& what, const std::string& want) {
  auto fail = [&what](const std::string& m) { return Status::Corruption(what + ": qcow2 " + m); };
  if (in.size() < 72) return fail("header truncated");
  uint32_t version = static_cast<uint32_t>(Be(in, 4, 4));
  uint32_t cluster_bits = static_cast<uint32_t>(Be(in, 20, 4));
  uint64_t disk_size = Be(in, 24, 8);
  uint32_t crypt = static_cast<uint32_t>(Be(in, 32, 4));
  uint32_t nb_snapshots = static_cast<uint32_t>(Be(in, 60, 4));
  uint64_t snapshots_offset = Be(in, 64, 8);
  if (version < 2 || version > 3) return Status::Unsupported(what + ": qcow2 version " + std::to_string(version));
  if (cluster_bits < 9 || cluster_bits > 21) return fail("cluster_bits " + std::to_string(cluster_bits) + " out of range");
  if (crypt != 0) return Status::Unsupported(what + ": encrypted qcow2 images are not supported");
  if (version == 3 && in.size() >= 104) {
    uint64_t incompatible = Be(in, 72, 8);
    if (incompatible & ~uint64_t{0x3}) {  // dirty and corrupt bits are harmless here
      return Status::Unsupported(what + ": qcow2 incompatible features " + std::to_string(incompatible) +
                                 " (compression type, extended L2, external data) are not supported");
    }
  }
  if (nb_snapshots == 0) return Status::InvalidArgument(what + ": the qcow2 image has no internal snapshot (savevm)");
  // Walk the snapshot table.
  uint64_t off = snapshots_offset;
  std::string names;
  struct Found {
    uint64_t l1_off = 0;
    uint32_t l1_size = 0;
    uint64_t vm_state_size = 0;
    std::string name;
  } found;
  int matches = 0;
  for (uint32_t i = 0; i < nb_snapshots; ++i) {
    if (off + 40 > in.size()) return fail("snapshot table truncated at offset " + std::to_string(off));
    uint64_t l1_off = Be(in, off, 8);
    uint32_t l1_size = static_cast<uint32_t>(Be(in, off + 8, 4));
    uint32_t id_len = static_cast<uint32_t>(Be(in, off + 12, 2));
    uint32_t name_len = static_cast<uint32_t>(Be(in, off + 14, 2));
    uint64_t vm_state = Be(in, off + 32, 4);
    uint32_t extra = static_cast<uint32_t>(Be(in, off + 36, 4));
    uint64_t p = off + 40;
    if (p + extra + id_len + name_len > in.size()) return fail("snapshot table truncated at offset " + std::to_string(off));
    if (extra >= 8) vm_state = Be(in, p, 8);
    p += extra;
    std::string id(reinterpret_cast<const char*>(in.data() + p), id_len);
    p += id_len;
    std::string name(reinterpret_cast<const char*>(in.data() + p), name_len);
    p += name_len;
    off = (p + 7) & ~uint64_t{7};
    names += (names.empty() ? "" : ", ") + name;
    if (want.empty() || want == name || want == id) {
      ++matches;
      found = {l1_off, l1_size, vm_state, name};
    }
  }
  if (matches == 0) return Status::NotFound(what + ": no internal snapshot '" + want + "' (the image has: " + names + ")");
  if (matches > 1) {
    return Status::InvalidArgument(what + ": the image has several internal snapshots (" + names +
                                   "): pick one with --snapshot NAME");
  }
  if (found.vm_state_size == 0) {
    return Status::InvalidArgument(what + ": internal snapshot '" + found.name + "' holds no VM state (disk only)");
  }
  const uint64_t cluster = 1ull << cluster_bits;
  const uint64_t l2_entries = cluster / 8;
  const uint64_t per_l1 = cluster * l2_entries;
  uint64_t vm_state_index = (disk_size + per_l1 - 1) / per_l1;
  StreamBytes out;
  out.what = what + " (qcow2 snapshot " + found.name + ")";
  if (found.vm_state_size > (64ull << 30)) return Status::Unsupported(out.what + ": VM state larger than 64 GiB");
  out.owned.assign(found.vm_state_size, 0);
  constexpr uint64_t kOffsetMask = 0x00fffffffffffe00ull;
  for (uint64_t done = 0; done < found.vm_state_size;) {
    uint64_t vaddr = vm_state_index * per_l1 + done;
    uint64_t l1_index = vaddr / per_l1;
    uint64_t in_cluster = vaddr % cluster;
    uint64_t n = std::min(cluster - in_cluster, found.vm_state_size - done);
    if (l1_index >= found.l1_size) return fail("VM state runs past snapshot '" + found.name + "''s L1 table");
    uint64_t l1_at = found.l1_off + l1_index * 8;
    if (l1_at + 8 > in.size()) return fail("L1 table at offset " + std::to_string(l1_at) + " truncated");
    uint64_t l2 = Be(in, l1_at, 8) & kOffsetMask;
    if (l2 != 0) {
      uint64_t l2_at = l2 + ((vaddr / cluster) % l2_entries) * 8;
      if (l2_at + 8 > in.size()) return fail("L2 table at offset " + std::to_string(l2_at) + " truncated");
      uint64_t entry = Be(in, l2_at, 8);
      if (entry & (1ull << 62)) return Status::Unsupported(out.what + ": compressed clusters are not supported");
      uint64_t data = entry & kOffsetMask;
      if (data != 0 && !(entry & 1)) {
        if (data + in_cluster + n > in.size()) return fail("data cluster at offset " + std::to_string(data) + " truncated");
        std::memcpy(out.owned.data() + done, in.data() + data + in_cluster, n);
      }
    }
    done += n;
  }
  return out;
}

}  // namespace

Result<StreamBytes> ExtractStream(std::span<const uint8_t> in, const std::string& what, const std::string& snapshot) {
  auto starts = [&in](const char* magic, size_t n) { return in.size() >= n && std::memcmp(in.data(), magic, n) == 0; };
  if (starts("QFI\xfb", 4)) return Qcow2(in, what, snapshot);
  if (!snapshot.empty()) {
    return Status::InvalidArgument(what + ": --snapshot is for qcow2 images, and this is not one");
  }
  if (starts(kLibvirtPartial, 16)) {
    return Status::InvalidArgument(what + ": libvirt save image is incomplete (\"LibvirtQemudPart\": the save did not finish)");
  }
  if (starts(kLibvirtMagic, 16)) return Libvirt(in, what);
  StreamBytes out;
  out.what = what;
  out.view = in;
  return out;
}

}  // namespace vmsnap::interop::qemu
