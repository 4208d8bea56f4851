#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# End-to-end tests between QEMU and vmsnap: QEMU boots a test guest (through
# the multiboot stub), is stopped mid-run and migrated to a file; vmsnap
# imports the stream and resumes it, and the guest's serial output must go on
# exactly where QEMU's stopped.
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

QEMU = "qemu-system-x86_64"


class Qmp:
    """Just enough QMP for stop / migrate / human monitor commands."""

    def __init__(self, path, timeout=20):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        end = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > end:
                    raise
                time.sleep(0.01)
        self.buf = b""
        self._read()
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **args):
        self.sock.sendall(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        while True:
            r = self._read()
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError(f"QMP {name}: {r['error']}")
            return r.get("return")

    def hmp(self, line):
        return self.cmd("human-monitor-command", **{"command-line": line})

    def wait_migration(self, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.cmd("query-migrate").get("status")
            if st == "completed":
                return
            if st in ("failed", "cancelled"):
                raise RuntimeError(f"migration {st}")
            time.sleep(0.02)
        raise RuntimeError("migration did not complete")


def qemu_argv(machine, accel, mem, smp):
    acc = accel
    if accel == "kvm":
        # A userspace PIC/PIT/IOAPIC: with the in-kernel one QEMU's microvm
        # saves all-zero i8259 sections.
        acc = "kvm,kernel-irqchip=split"
    return [QEMU, "-M", machine, "-accel", acc, "-cpu", "qemu64", "-m", mem,
            "-smp", str(smp), "-nodefaults", "-display", "none", "-no-reboot",
            "-device", "isa-debug-exit,iobase=0xf4,iosize=1"]


def save_from_qemu(tmp, image, stream, machine, accel, mem, smp, after):
    """Runs `image` in QEMU until its serial output matches `after`, then stops
    it and migrates it into `stream`. Returns (serial so far, registers text)."""
    serial = os.path.join(tmp, "qemu-serial.txt")
    qmp_path = os.path.join(tmp, "qmp.sock")
    for p in (serial, qmp_path):
        if os.path.exists(p):
            os.unlink(p)
    argv = qemu_argv(machine, accel, mem, smp) + [
        "-serial", f"file:{serial}", "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-kernel", image]
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
    ap.add_argument("--test", choices=["import"])
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
    print(f"{c.failures} failure(s)")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
