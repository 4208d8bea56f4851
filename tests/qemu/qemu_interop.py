#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# End-to-end tests between QEMU and vmsnap: QEMU boots a test guest (through
# the multiboot stub), is stopped mid-run and migrated to a file; vmsnap
# imports the stream and resumes it, and the guest's serial output must go on
# exactly where QEMU's stopped. The other way: a snapshot vmsnap took is
# exported as a stream that QEMU's -incoming resumes.
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qmp import QEMU, Qmp  # noqa: E402


def qemu_argv(machine, accel, mem, smp):
    acc = accel
    if accel == "kvm":
        # A userspace PIC/PIT/IOAPIC: with the in-kernel one QEMU's microvm
        # saves all-zero i8259 sections.
        acc = "kvm,kernel-irqchip=split"
    return [QEMU, "-M", machine, "-accel", acc, "-cpu", "qemu64", "-m", mem,
            "-smp", str(smp), "-nodefaults", "-display", "none", "-no-reboot",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=1"]


def save_from_qemu(tmp, image, stream, machine, accel, mem, smp, after, caps=(), qcow2=None):
    """Runs `image` in QEMU until its serial output matches `after`, then stops
    it and migrates it into `stream` (with `qcow2`: `savevm snap1` into that
    image instead). Returns (serial so far, registers text)."""
    serial = os.path.join(tmp, "qemu-serial.txt")
    qmp_path = os.path.join(tmp, "qmp.sock")
    for p in (serial, qmp_path):
        if os.path.exists(p):
            os.unlink(p)
    argv = qemu_argv(machine, accel, mem, smp) + [
        "-serial", f"file:{serial}", "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-kernel", image]
    if qcow2:
        argv += ["-drive", f"file={qcow2},if=none,id=d0,format=qcow2"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        qmp = Qmp(qmp_path)
        end = time.monotonic() + 30
        while not re.search(after, open(serial, "rb").read().decode("latin-1")):
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError(f"guest never printed {after!r}")
            time.sleep(0.005)
        qmp.cmd("stop")
        regs = qmp.hmp("info registers -a")
        if qcow2:
            out = qmp.hmp("savevm snap1")
            if out.strip():
                raise RuntimeError(f"savevm: {out}")
        else:
            if caps:
                qmp.cmd("migrate-set-capabilities",
                        capabilities=[{"capability": c, "state": True} for c in caps])
            qmp.cmd("migrate", uri=f"exec:cat > {stream}")
            qmp.wait_migration()
        qmp.cmd("quit")
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return open(serial, "rb").read(), regs



def run(argv, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, **kw)


def parse_info_registers(text):
    """{'rax': int, ..., 'rip': int, 'rflags': int, 'cr0':...} per CPU, from
    HMP 'info registers -a'."""
    cpus = []
    for block in re.split(r"CPU#\d+\s*\n", text.replace("\r", ""))[1:]:
        r = {}
        for name, val in re.findall(r"\b(R[A-Z0-9]{1,2}|EFER|CR[0234]) ?=([0-9a-f]+)", block):
            key = name.lower()
            if key == "rfl":
                key = "rflags"
            r[key] = int(val, 16)
        cpus.append(r)
    return cpus


class Checker:
    def __init__(self):
        self.failures = 0

    def check(self, cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            self.failures += 1
        return cond


def expected_output(vmsnap, guest_elf):
    """What the guest prints when vmsnap runs it start to finish."""
    p = run([vmsnap, "run", guest_elf, "--serial", "-"])
    return p.stdout, p.returncode


def import_case(c, a, tmp, accel, machine, smp):
    name = f"{machine}/{accel}/{smp}cpu"
    stream = os.path.join(tmp, f"{machine}-{accel}-{smp}.stream")
    snap = os.path.join(tmp, f"{machine}-{accel}-{smp}.vmsnap")
    before, regs_text = save_from_qemu(tmp, a.image, stream, machine, accel, "64M", smp, a.after)
    p = run([a.vmsnap, "import", "qemu", stream, "-o", snap])
    if not c.check(p.returncode == 0, f"{name}: import exits 0 ({p.stderr.decode().strip()[-300:]})"):
        return
    warnings = [l for l in p.stderr.decode().splitlines() if "warning:" in l]
    c.check(len(warnings) == len(set(warnings)) and any("CPUID" in w for w in warnings),
            f"{name}: import prints one warning per kind of loss, CPUID's source among them")
    q = run([a.vmsnap, "import", "-q", "qemu", stream, "-o", snap + ".q"])
    c.check(q.returncode == 0 and "warning" not in q.stderr.decode(),
            f"{name}: import -q prints no warning ({q.stderr.decode().strip()[-200:]!r})")
    p = run([a.vmsnap, "load", snap, "--serial", "-"])
    c.check(p.returncode == a.exit_status, f"{name}: load exits {a.exit_status} (got {p.returncode}: "
            f"{p.stderr.decode().strip()[-200:]})")
    c.check(before + p.stdout == a.expected,
            f"{name}: QEMU's output then vmsnap's is the guest's whole output "
            f"(QEMU {len(before)} bytes, vmsnap {len(p.stdout)} bytes)")
    # Registers: what QEMU showed before the save, in vmsnap's JSON.
    p = run([a.vmsnap, "inspect", snap, "--json"])
    c.check(p.returncode == 0, f"{name}: inspect --json")
    j = json.loads(p.stdout)
    qregs = parse_info_registers(regs_text)
    c.check(len(j["vcpus"]) == smp == len(qregs), f"{name}: {smp} vCPUs in the import")
    bad = []
    for i, q in enumerate(qregs):
        v = j["vcpus"][i]
        for k, val in q.items():
            if k in v["regs"]:
                got = int(v["regs"][k], 16)
            elif k in v["sregs"]:
                got = int(v["sregs"][k], 16)
            else:
                continue
            if got != val:
                bad.append(f"vcpu{i}.{k}: QEMU {val:#x}, import {got:#x}")
    c.check(not bad and len(qregs[0]) >= 20,
            f"{name}: {sum(len(q) for q in qregs)} register values equal QEMU's info registers {bad[:4]}")
    if smp == 1 and accel == "kvm":
        offline_tools(c, a, tmp, snap, name, j)


def offline_tools(c, a, tmp, snap, name, j):
    p = run([a.vmsnap, "verify", snap])
    c.check(p.returncode == 0, f"{name}: verify exits 0")
    elf = os.path.join(tmp, "core.elf")
    p = run([a.vmsnap, "export", snap, "--format", "elf", "-o", elf])
    c.check(p.returncode == 0 and open(elf, "rb").read(4) == b"\x7fELF", f"{name}: export --format elf")
    rip = j["vcpus"][0]["regs"]["rip"]
    p = run([a.vmsnap, "translate", snap, "--gva", rip])
    c.check(p.returncode == 0 and rip[2:].lstrip("0") in p.stdout.decode(),
            f"{name}: translate --gva RIP (identity-mapped) -> {p.stdout.decode().strip()[:80]}")
    p = run([a.vmsnap, "read", snap, "--gva", "0x100000", "--len", "2", "--format", "raw"])
    guest = open(a.image, "rb").read()
    c.check(p.returncode == 0 and len(p.stdout) == 2 and p.stdout == guest_first_bytes(a.image_bin),
            f"{name}: read --gva 0x100000 gives the guest's first bytes")
    p = run([a.vmsnap, "inspect", snap])
    c.check(p.returncode == 0 and "qemu:serial:0" in p.stdout.decode(),
            f"{name}: inspect lists unmapped QEMU sections as device records")


def import_and_load(c, a, name, before, src, extra=()):
    snap = src + ".vmsnap"
    p = run([a.vmsnap, "import", "qemu", src, "-o", snap, *extra])
    if not c.check(p.returncode == 0, f"{name}: import exits 0 {p.stderr.decode().strip()[-200:]!r}"):
        return
    p = run([a.vmsnap, "load", snap, "--serial", "-"])
    c.check(p.returncode == a.exit_status and before + p.stdout == a.expected,
            f"{name}: the guest's output continues exactly (exit {p.returncode})")


def libvirt_image(stream_bytes, fmt):
    """A libvirt save image: header, domain XML (NUL-padded), the stream."""
    xml = b"<domain type='kvm'><name>t</name></domain>\n".ljust(1024, b"\0")
    hdr = b"LibvirtQemudSave" + struct.pack("<5I", 2, len(xml), 1, fmt, 0) + b"\0" * 56
    return hdr + xml + stream_bytes


def containers_case(c, a, tmp):
    stream = os.path.join(tmp, "c.stream")
    before, _ = save_from_qemu(tmp, a.image, stream, "microvm", "kvm", "64M", 1, a.after)
    data = open(stream, "rb").read()
    raw = os.path.join(tmp, "raw.save")
    open(raw, "wb").write(libvirt_image(data, 0))
    import_and_load(c, a, "libvirt save image, raw", before, raw)
    z = subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout
    zs = os.path.join(tmp, "zstd.save")
    open(zs, "wb").write(libvirt_image(z, 5))
    import_and_load(c, a, "libvirt save image, zstd", before, zs)
    part = os.path.join(tmp, "part.save")
    open(part, "wb").write(b"LibvirtQemudPart" + libvirt_image(data, 0)[16:])
    bad_input(c, a, "libvirt LibvirtQemudPart image", part, "incomplete")

    disk = os.path.join(tmp, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16M"], check=True)
    before, _ = save_from_qemu(tmp, a.image, None, "microvm", "tcg", "64M", 1, a.after, qcow2=disk)
    import_and_load(c, a, "qcow2 internal snapshot (savevm snap1)", before, disk, ["--snapshot", "snap1"])
    bad_input(c, a, "qcow2 with an unknown --snapshot", disk, "no internal snapshot 'nope'",
              ["--snapshot", "nope"])


def bad_input(c, a, name, path, expect, extra=()):
    out = path + ".out.vmsnap"
    open(out, "wb").write(b"precious")
    p = run([a.vmsnap, "import", "qemu", path, "-o", out, *extra])
    err = p.stderr.decode()
    lines = [l for l in err.splitlines() if l]
    ok = (p.returncode == 2 and len(lines) == 1 and expect in err
          and open(out, "rb").read() == b"precious" and "Traceback" not in err)
    c.check(ok, f"{name}: exit {p.returncode}, one line naming it, output untouched: {err.strip()[:160]!r}")
    os.unlink(out)


def section_boundaries(data):
    """Offsets where a section ends: a footer (0x7e, be32 id) followed by a
    section type byte."""
    out = []
    for m in re.finditer(rb"\x7e\x00\x00\x00", data):
        p = m.start()
        if p + 5 < len(data) and data[p + 5] in (0, 1, 2, 3, 4):
            out.append(p + 5)
    return out


def bad_case(c, a, tmp):
    stream = os.path.join(tmp, "b.stream")
    save_from_qemu(tmp, a.image, stream, "microvm", "tcg", "64M", 1, a.after)
    data = open(stream, "rb").read()
    cuts = section_boundaries(data)
    c.check(len(cuts) >= 10, f"found {len(cuts)} section boundaries")
    bad = os.path.join(tmp, "bad.stream")
    for cut in cuts + [cut + 3 for cut in cuts] + [0, 5, 9, 30, len(data) - 1]:
        open(bad, "wb").write(data[:cut])
        expect = "offset" if cut >= 4 else "QEVM"
        bad_input(c, a, f"stream truncated at {cut}", bad, expect)
    cpu = data.index(b"\x03cpu\x00\x00\x00\x00\x00\x00\x00\x0c")
    # A newer QEMU's cpu section: the section and its vmdesc entry agree on 99.
    desc = b'"name": "cpu", "instance_id": 0, "vmsd_name": "cpu", "version": 12'
    newer = data[:cpu + 11] + b"\x63" + data[cpu + 12:]
    open(bad, "wb").write(newer.replace(desc, desc[:-2] + b"99"))
    bad_input(c, a, "unknown cpu section version", bad, "version 99")
    open(bad, "wb").write(newer)
    bad_input(c, a, "a section that disagrees with its vmdesc", bad, "vmdesc says version 12")
    i = data.index(b"microvm")
    open(bad, "wb").write(data[:i] + b"virt-72" + data[i + 7:])
    bad_input(c, a, "a stream from another architecture", bad, "wrong architecture")
    open(bad, "wb").write(data[:4] + b"\x00\x00\x00\x02" + data[8:])
    bad_input(c, a, "stream version 2", bad, "version 2")
    open(bad, "wb").write(b"hello, not a stream\n" * 10)
    bad_input(c, a, "a text file", bad, "not a QEMU migration stream")
    eof = data.rindex(b"\x00\x06" + struct.pack(">I", len(data) - data.rindex(b'{"page_size"')))
    open(bad, "wb").write(data[:eof + 1])
    bad_input(c, a, "a stream without vmdesc", bad, "suppress-vmdesc")
    comp = os.path.join(tmp, "compressed.stream")
    save_from_qemu(tmp, a.image, comp, "microvm", "tcg", "64M", 1, a.after, caps=("compress",))
    bad_input(c, a, "a compressed stream (compress capability)", comp, "not supported")


def resume_in_qemu(tmp, stream, accel, mem="64M", smp=1, machine="microvm", extra=()):
    """Starts QEMU with `-incoming exec:cat STREAM` and the options of
    docs/interop-qemu.md, waits until it has loaded the stream, reads the
    registers, sends `cont` and returns (serial output, exit status, registers
    text, QEMU's stderr)."""
    serial = os.path.join(tmp, "resume-serial.txt")
    qmp_path = os.path.join(tmp, "resume-qmp.sock")
    for p in (serial, qmp_path):
        if os.path.exists(p):
            os.unlink(p)
    argv = qemu_argv(machine, accel, mem, smp) + [
        "-serial", f"file:{serial}", "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-incoming", f"exec:cat {stream}", *extra]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    regs = ""
    try:
        qmp = Qmp(qmp_path)
        end = time.monotonic() + 30
        while qmp.cmd("query-status")["status"] == "inmigrate":
            if time.monotonic() > end:
                raise RuntimeError("QEMU never finished loading the stream")
            time.sleep(0.02)
        regs = qmp.hmp("info registers -a")
        try:
            qmp.cmd("cont")
        except (RuntimeError, OSError):
            pass  # a guest that exits at once takes QEMU (and its reply) with it
        status = proc.wait(timeout=30)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        proc.kill()
        proc.wait()
        status = f"failed: {e}"
    err = proc.stderr.read().decode(errors="replace")
    # isa-debug-exit makes QEMU exit with value * 2 + 1.
    if isinstance(status, int) and status & 1:
        status >>= 1
    return open(serial, "rb").read() if os.path.exists(serial) else b"", status, regs, err


def compare_registers(snapshot_json, regs_text):
    """Every register `info registers` shows that the snapshot also names,
    compared; returns (count compared, mismatches)."""
    bad, n = [], 0
    for i, q in enumerate(parse_info_registers(regs_text)):
        v = snapshot_json["vcpus"][i]
        for k, val in q.items():
            src = v["regs"] if k in v["regs"] else v["sregs"] if k in v["sregs"] else None
            if src is None:
                continue
            n += 1
            if int(src[k], 16) != val:
                bad.append(f"vcpu{i}.{k}: snapshot {src[k]}, QEMU {val:#x}")
    return n, bad


def export_case(c, a, tmp):
    # vmsnap run -> doorbell snapshot -> export -> QEMU, under TCG and KVM;
    # timer's snapshot holds a halted second vCPU with its LAPIC timer armed.
    for guest, status, smp in (("pit", 44, 1), ("timer", 43, 2), ("regs", 42, 1)):
        elf = os.path.join(a.guest_dir, guest + ".elf")
        snap = os.path.join(tmp, guest + ".vmsnap")
        p = run([a.vmsnap, "run", elf, "--serial", "-", "--vcpus", str(smp), "--snapshot-on-doorbell", snap])
        c.check(p.returncode == status and os.path.exists(snap), f"{guest}: vmsnap run takes a doorbell snapshot")
        p = run([a.vmsnap, "load", snap, "--serial", "-"])
        rest = p.stdout
        c.check(p.returncode == status and rest, f"{guest}: vmsnap load gives the rest of the output")
        stream = os.path.join(tmp, guest + ".qemu")
        p = run([a.vmsnap, "export", snap, "--format", "qemu", "-o", stream])
        warnings = [l for l in p.stderr.decode().splitlines() if l]
        c.check(p.returncode == 0 and warnings and all("warning:" in w for w in warnings)
                and len(set(warnings)) == len(warnings) and any("CPUID" in w for w in warnings),
                f"{guest}: export --format qemu exits 0, one warning line per kind ({len(warnings)})")
        j = json.loads(run([a.vmsnap, "inspect", snap, "--json"]).stdout)
        for accel in ("tcg", "kvm"):
            out, st, regs, err = resume_in_qemu(tmp, stream, accel, smp=smp)
            c.check(st == status and out == rest,
                    f"{guest}/{accel}: QEMU resumes the export and continues the output exactly "
                    f"(exit {st}, {out[:60]!r}, {err.strip()[-200:]!r})")
            n, bad = compare_registers(j, regs)
            c.check(n >= 20 and not bad, f"{guest}/{accel}: {n} registers in QEMU equal the snapshot's {bad[:3]}")
    # `-o -` writes the same stream to standard output.
    p = subprocess.run([a.vmsnap, "export", snap, "--format", "qemu", "-o", "-"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    c.check(p.returncode == 0 and p.stdout == open(stream, "rb").read(), "export -o - streams the same bytes")
    # The export is a stream vmsnap itself reads back, and loads.
    back = stream + ".vmsnap"
    p = run([a.vmsnap, "import", "qemu", stream, "-o", back])
    c.check(p.returncode == 0, f"the export imports again {p.stderr.decode().strip()[-160:]!r}")
    p = run([a.vmsnap, "load", back, "--serial", "-"])
    c.check(p.returncode == 42 and p.stdout == rest, "and that import resumes in vmsnap")

    # QEMU -> import -> export -> QEMU, with the source's own options.
    for accel in ("tcg", "kvm"):
        src = os.path.join(tmp, f"rt-{accel}.stream")
        before, _ = save_from_qemu(tmp, a.image, src, "microvm", accel, "64M", 1, a.after)
        snap = src + ".vmsnap"
        p = run([a.vmsnap, "import", "qemu", src, "-o", snap])
        c.check(p.returncode == 0, f"round trip/{accel}: import")
        out_stream = src + ".qemu"
        p = run([a.vmsnap, "export", snap, "--format", "qemu", "-o", out_stream])
        c.check(p.returncode == 0, f"round trip/{accel}: export {p.stderr.decode().strip()[-160:]!r}")
        out, st, _, err = resume_in_qemu(tmp, out_stream, accel, extra=["-kernel", a.image])
        c.check(st == a.exit_status and before + out == a.expected,
                f"round trip/{accel}: QEMU -> vmsnap -> QEMU continues the output exactly "
                f"(exit {st}, QEMU {len(before)} + {len(out)} bytes, {err.strip()[-200:]!r})")

    # Bad input.
    golden = os.path.join(a.golden_dir, "s390x.vmsnap")
    out = os.path.join(tmp, "s390x.qemu")
    open(out, "wb").write(b"precious")
    p = run([a.vmsnap, "export", golden, "--format", "qemu", "-o", out])
    lines = [l for l in p.stderr.decode().splitlines() if l]
    c.check(p.returncode == 2 and len(lines) == 1 and "x86_64" in lines[0] and open(out, "rb").read() == b"precious",
            f"an s390x snapshot: exit {p.returncode}, one line, output untouched: {lines[:1]!r}")
    snap = os.path.join(tmp, "pit.vmsnap")
    before = open(snap, "rb").read()
    p = run([a.vmsnap, "export", snap, "--format", "qemu", "-o", snap])
    lines = [l for l in p.stderr.decode().splitlines() if l]
    c.check(p.returncode == 2 and len(lines) == 1 and open(snap, "rb").read() == before,
            f"the snapshot as its own output is refused: {lines[:1]!r}")


def guest_first_bytes(path):
    return open(path, "rb").read(2)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--save", nargs=2, metavar=("IMAGE", "STREAM"))
    ap.add_argument("--machine", default="microvm")
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--mem", default="64M")
    ap.add_argument("--smp", type=int, default=1)
    ap.add_argument("--after", default="tick group 0+3\n")
    ap.add_argument("--vmsnap")
    ap.add_argument("--guest", help="the test guest's ELF (vmsnap run gives the expected output)")
    ap.add_argument("--image", help="the same guest wrapped for QEMU's -kernel")
    ap.add_argument("--image-bin", help="the guest as a flat binary")
    ap.add_argument("--exit-status", type=int, default=46)
    ap.add_argument("--guest-dir", help="where the test guests' ELF files are")
    ap.add_argument("--golden-dir", help="tests/golden (for a snapshot of another architecture)")
    ap.add_argument("--test", choices=["import", "containers", "bad", "export"])
    a = ap.parse_args()
    if a.save:
        with tempfile.TemporaryDirectory() as tmp:
            out, regs = save_from_qemu(tmp, a.save[0], os.path.abspath(a.save[1]), a.machine,
                                       a.accel, a.mem, a.smp, a.after)
            sys.stdout.write(out.decode("latin-1"))
            sys.stdout.write(regs)
        return 0
    if not os.path.exists("/dev/kvm"):
        print("no /dev/kvm: skipped")
        return 77
    c = Checker()
    a.expected, status = expected_output(a.vmsnap, a.guest)
    c.check(status == a.exit_status and a.expected.count(b"\n") > 5, "vmsnap run gives the reference output")
    with tempfile.TemporaryDirectory() as tmp:
        if a.test == "import":
            for accel, machine, smp in (("tcg", "microvm", 1), ("kvm", "microvm", 1), ("kvm", "pc", 2),
                                        ("tcg", "microvm", 2)):
                import_case(c, a, tmp, accel, machine, smp)
        elif a.test == "containers":
            containers_case(c, a, tmp)
        elif a.test == "bad":
            bad_case(c, a, tmp)
        elif a.test == "export":
            export_case(c, a, tmp)
    print(f"{c.failures} failure(s)")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
