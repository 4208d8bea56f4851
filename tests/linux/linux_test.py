#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# Checks on a real Linux guest (the fixture of linux_fixture.py): its QEMU
# migration streams import and decode, the guest's own page tables lead to the
# KASLR-shifted linux_banner, crash reads vmsnap's ELF export as it reads
# QEMU's dump of the same moment, and diff finds the pages the workload wrote.
import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "qemu"))
sys.path.insert(0, here)
from qemu_interop import Checker, parse_info_registers  # noqa: E402
import linux_fixture as fx  # noqa: E402

SKIP = 77
NT_PRSTATUS, NT_PRFPREG, NT_X86_XSTATE = 1, 2, 0x202


def run(argv, timeout=300, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout, **kw)


def elf_notes(path):
    """[(name, type, desc)] of an ELF64 core's PT_NOTE segments, and its
    PT_LOAD headers as (offset, vaddr, paddr, filesz)."""
    with open(path, "rb") as f:
        eh = f.read(64)
        phoff, = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
        notes, loads = [], []
        for i in range(phnum):
            p_type, _, off, vaddr, paddr, filesz = struct.unpack_from("<IIQQQQ", ph, i * phentsize)
            if p_type == 1:
                loads.append((off, vaddr, paddr, filesz))
            elif p_type == 4:
                f.seek(off)
                data = f.read(filesz)
                at = 0
                while at + 12 <= len(data):
                    namesz, descsz, typ = struct.unpack_from("<III", data, at)
                    at += 12
                    name = data[at:at + namesz].rstrip(b"\0").decode()
                    at += (namesz + 3) & ~3
                    notes.append((name, typ, data[at:at + descsz]))
                    at += (descsz + 3) & ~3
    return notes, loads


def qemu_cpu_state(desc):
    """The fields of a "QEMU" note (QEMUCPUState) by name."""
    names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags"]
    out = {"version": struct.unpack_from("<I", desc, 0)[0], "size": struct.unpack_from("<I", desc, 4)[0]}
    vals = struct.unpack_from("<18Q", desc, 8)
    out.update(zip(names, vals))
    at = 8 + 18 * 8
    for seg in ("cs", "ds", "es", "fs", "gs", "ss", "ldt", "tr", "gdt", "idt"):
        sel, limit, flags, _, base = struct.unpack_from("<IIIIQ", desc, at)
        out[seg] = {"selector": sel, "limit": limit, "flags": flags, "base": base}
        at += 24
    out["cr"] = list(struct.unpack_from("<5Q", desc, at))
    at += 40
    if len(desc) >= at + 8:
        out["kernel_gs_base"] = struct.unpack_from("<Q", desc, at)[0]
    return out


def vmcoreinfo(notes):
    for name, _, desc in notes:
        if name == "VMCOREINFO":
            return dict(l.split("=", 1) for l in desc.decode().splitlines() if "=" in l)
    return {}


def symbol(vmlinux, name):
    p = run(["nm", vmlinux])
    m = re.search(rb"^([0-9a-f]+) \w " + re.escape(name.encode()) + rb"$", p.stdout, re.M)
    return int(m.group(1), 16)


class Ctx:
    def __init__(self, a):
        self.vmsnap = a.vmsnap
        self.dir = a.dir
        meta = dict(l.split("=", 1) for l in open(os.path.join(a.dir, "fixture.txt")).read().split())
        self.vmlinux = meta["vmlinux"]
        self.version = meta["version"]

    def path(self, name):
        return os.path.join(self.dir, name)

    def imported(self, c, which):
        """Imports {which}.stream once (the tests may run in any order)."""
        snap = self.path(which + ".vmsnap")
        if not os.path.exists(snap):
            p = run([self.vmsnap, "import", "qemu", self.path(which + ".stream"), "-o", snap + f".{os.getpid()}.part"])
            if not c.check(p.returncode == 0, f"import qemu {which}.stream exits 0 "
                           f"({p.stderr.decode().strip()[-300:]!r})"):
                return None
            os.rename(snap + f".{os.getpid()}.part", snap)
        return snap


def test_import(c, x):
    snap = x.imported(c, "a")
    if not snap:
        return
    p = run([x.vmsnap, "verify", snap])
    c.check(p.returncode == 0, f"verify exits 0 ({p.stdout.decode().strip()[-100:]!r})")
    p = run([x.vmsnap, "inspect", snap, "--json"])
    c.check(p.returncode == 0, "inspect --json exits 0")
    j = json.loads(p.stdout)
    v = j["vcpus"][0]
    rip = int(v["regs"]["rip"], 16)
    c.check(rip >= 0xffffffff80000000, f"RIP {rip:#x} is in the kernel's text")
    qregs = parse_info_registers(open(x.path("qemu-registers.txt")).read())[0]
    bad = []
    for k, val in qregs.items():
        src = v["regs"] if k in v["regs"] else v["sregs"] if k in v["sregs"] else None
        if src is not None and int(src[k], 16) != val:
            bad.append(f"{k}: QEMU {val:#x}, import {src[k]}")
    c.check(not bad and len(qregs) >= 20,
            f"{len(qregs)} registers equal QEMU's 'info registers' before the migration {bad[:4]}")
    cr4 = int(v["sregs"]["cr4"], 16)
    c.check(v["sregs"]["cs"]["l"] in (1, "1", True) or int(str(v["sregs"]["cs"]["l"]), 0) == 1,
            "CS is a 64-bit code segment")
    c.check(cr4 & (1 << 12), f"CR4.LA57 is set: the kernel runs 5-level paging under -cpu max (cr4 {cr4:#x})")
    text = run([x.vmsnap, "inspect", snap]).stdout.decode()
    lapic_ok = re.search(r"(?i)lapic", text) is not None
    c.check(lapic_ok and "cr3" in text.lower() and "idt" in text.lower(),
            "inspect's text shows the control registers, descriptor tables and LAPIC")
    dec = v.get("lapic_decoded") or {}
    c.check(bool(dec), f"inspect --json decodes the LAPIC ({sorted(dec)[:6]})")

    # KASLR: the kernel's VMCOREINFO (in QEMU's dump) says how far it moved.
    notes, _ = elf_notes(x.path("qemu.elf"))
    info = vmcoreinfo(notes)
    c.check("KERNELOFFSET" in info, "QEMU's dump carries the guest's VMCOREINFO (vmcoreinfo device)")
    offset = int(info.get("KERNELOFFSET", "0"), 16)
    banner = symbol(x.vmlinux, "linux_banner") + offset
    p = run([x.vmsnap, "read", snap, "--gva", hex(banner), "--len", "160", "--format", "raw"])
    want = f"Linux version {x.version}-cloud-amd64".encode()
    c.check(p.returncode == 0 and p.stdout.startswith(want),
            f"read --gva linux_banner ({banner:#x}, KASLR offset {offset:#x}) gives "
            f"{p.stdout[:60]!r}")
    p = run([x.vmsnap, "translate", snap, "--gva", hex(banner)])
    out = p.stdout.decode()
    c.check(p.returncode == 0 and "5-level" in out, f"translate walks 5-level tables: {out.strip()[:200]!r}")


def crash_session(x, dump, tmp):
    cmds = os.path.join(tmp, "crash-commands")
    with open(cmds, "w") as f:
        f.write("sys\nlog\nrd -a linux_banner\nbt\nps\nquit\n")
    p = run(["crash", "-s", x.vmlinux, dump, "-i", cmds], timeout=600)
    text = (p.stdout + p.stderr).decode(errors="replace")
    # What legitimately differs between two dumps of one moment: their names.
    return p.returncode, text.replace(dump, "DUMPFILE")


def test_crash(c, x):
    snap = x.imported(c, "a")
    if not snap:
        return
    elf = x.path("vmsnap.elf")
    p = run([x.vmsnap, "export", snap, "--format", "elf", "-o", elf])
    if not c.check(p.returncode == 0, f"export --format elf exits 0 {p.stderr.decode().strip()[-200:]!r}"):
        return
    ours, our_loads = elf_notes(elf)
    theirs, their_loads = elf_notes(x.path("qemu.elf"))
    kinds = [(n, t) for n, t, _ in ours]
    c.check(kinds == [("CORE", NT_PRSTATUS), ("CORE", NT_PRFPREG), ("LINUX", NT_X86_XSTATE),
                      ("QEMU", 0), ("VMCOREINFO", 0)],
            f"notes: NT_PRSTATUS, NT_PRFPREG, NT_X86_XSTATE, QEMU, VMCOREINFO ({kinds})")
    qo = [qemu_cpu_state(d) for n, _, d in ours if n == "QEMU"]
    qt = [qemu_cpu_state(d) for n, _, d in theirs if n == "QEMU"]
    if c.check(len(qo) == len(qt) == 1, "one QEMU note in each dump"):
        a, b = qo[0], qt[0]
        diffs = []
        for k in a:
            if isinstance(a[k], dict):
                # QEMU under TCG keeps the descriptor's whole high word as a
                # segment's flags (limit and base bits too); vmsnap has KVM's
                # decoded attributes. Selectors, bases and limits must agree.
                for f in ("selector", "base", "limit"):
                    if a[k][f] != b[k][f]:
                        diffs.append(f"{k}.{f} {a[k][f]:#x} != {b[k][f]:#x}")
                if a[k]["flags"] & 0x00f0ff00 != b[k]["flags"] & 0x00f0ff00 and k not in ("gdt", "idt"):
                    diffs.append(f"{k}.flags {a[k]['flags']:#x} != {b[k]['flags']:#x}")
            elif a[k] != b[k]:
                diffs.append(f"{k} {a[k]} != {b[k]}")
        c.check(not diffs, f"the QEMU note's fields equal QEMU's own {diffs[:5]}")
    ov = [d for n, _, d in ours if n == "VMCOREINFO"]
    tv = [d for n, _, d in theirs if n == "VMCOREINFO"]
    c.check(ov and ov == tv, "the VMCOREINFO note is the one QEMU wrote, byte for byte")
    xs = [d for n, t, d in ours if t == NT_X86_XSTATE]
    if xs:
        xcr0 = struct.unpack_from("<Q", xs[0], 464)[0]
        c.check(xcr0 & 3 == 3, f"the XSAVE note carries XCR0 ({xcr0:#x}) at offset 464")
    c.check([(v, p) for _, v, p, _ in our_loads] == [(p, p) for _, _, p, _ in our_loads],
            "PT_LOAD p_vaddr equals p_paddr, as in QEMU's non-paging dump")
    # LiME's 32-byte headers shift the data off page boundaries; the export
    # must still leave the guest's zero runs as holes, about as a raw image does.
    alloc = {}
    for fmt in ("raw", "lime"):
        out = x.path("vmsnap." + fmt)
        run([x.vmsnap, "export", snap, "--format", fmt, "-o", out]).check_returncode()
        alloc[fmt] = os.stat(out).st_blocks * 512
        os.unlink(out)
    c.check(alloc["lime"] <= alloc["raw"] * 1.005,
            f"the LiME image is as sparse as the raw one ({alloc['lime'] >> 10} KiB vs "
            f"{alloc['raw'] >> 10} KiB allocated)")
    if shutil.which("crash") is None:
        print("crash is not installed: the crash comparison is skipped")
        return
    rq, tq = crash_session(x, x.path("qemu.elf"), x.dir)
    rv, tv_ = crash_session(x, elf, x.dir)
    with open(x.path("crash-qemu.txt"), "w") as f:
        f.write(tq)
    with open(x.path("crash-vmsnap.txt"), "w") as f:
        f.write(tv_)
    c.check(rq == 0 and "RELEASE: " + x.version in tq and fx.KMSG_LINES[1] in tq,
            "crash on QEMU's dump prints sys and the log (the reference is sound)")
    c.check("Linux version " + x.version in tv_ and fx.KMSG_LINES[0] in tv_,
            "crash on vmsnap's export prints the banner and the workload's kernel log lines")
    same = tq == tv_
    if not same:
        import difflib
        for line in list(difflib.unified_diff(tq.splitlines(), tv_.splitlines(), "qemu", "vmsnap",
                                              lineterm=""))[:40]:
            print("   " + line)
    c.check(same, f"crash's sys, log, rd -a linux_banner, bt and ps print the same on both "
                  f"({len(tq.splitlines())} lines)")


def find_page(raw, prefix):
    """Guest-physical addresses of pages that begin with `prefix`."""
    return [m.start() for m in re.finditer(re.escape(prefix), raw) if m.start() % 4096 == 0]


def test_diff(c, x):
    a = x.imported(c, "a")
    b = x.imported(c, "b")
    if not a or not b:
        return
    p = run([x.vmsnap, "diff", a, b])
    out = p.stdout.decode()
    c.check(p.returncode == 1, f"diff of two moments a second apart exits 1 (got {p.returncode})")
    # Both moments may find the vCPU halted in the idle loop at the same RIP;
    # some of its state (registers, XSAVE, LAPIC timer) differs all the same.
    c.check(re.search(r"^vcpus\[0\]\.(regs|sregs|xsave_decoded|lapic_decoded|msrs)", out, re.M) is not None
            and re.search(r"\d+ (differing )?page", out) is not None,
            f"diff summarizes vCPU state and differing pages: {out.strip()[:300]!r}")
    p = run([x.vmsnap, "diff", a, b, "--json"])
    j = json.loads(p.stdout)
    ranges = [(int(r["start"], 16), int(r["end"], 16)) for r in j["memory"]["ranges"]]
    pages = j["memory"]["differing_pages"]
    c.check(pages > 0 and ranges, f"diff --json: {pages} differing pages in {len(ranges)} ranges")
    raws = {}
    for w, snap in (("a", a), ("b", b)):
        out_raw = x.path(w + ".raw")
        run([x.vmsnap, "export", snap, "--format", "raw", "-o", out_raw]).check_returncode()
        raws[w] = open(out_raw, "rb").read()
        os.unlink(out_raw)
    prefix = fx.COUNTER_PREFIX.encode()
    in_b = find_page(raws["b"], prefix)
    values = {}
    for w in ("a", "b"):
        vals = []
        for gpa in find_page(raws[w], prefix):
            m = re.match(re.escape(prefix) + rb"(\d+)\n", raws[w][gpa:gpa + 64])
            if m:
                vals.append(int(m.group(1)))
        values[w] = max(vals) if vals else None
    c.check(values["a"] is not None and values["b"] is not None and values["b"] > values["a"],
            f"the counter's tmpfs page went from {values['a']} to {values['b']}")
    newest = [g for g in in_b if raws["b"][g:g + 64].startswith(prefix + str(values["b"]).encode())]
    hit = [g for g in newest if any(s <= g < e for s, e in ranges)]
    c.check(newest and hit == newest,
            f"the page holding the new counter value ({[hex(g) for g in newest]}) is in diff --json's ranges")
    tm = fx.TMPFS_LINE.encode()
    known = find_page(raws["a"], tm * 2)
    unchanged = [g for g in known if not any(s <= g < e for s, e in ranges)]
    c.check(known and unchanged,
            f"pages of the tmpfs file written before both snapshots ({len(known)}) are not all in them")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vmsnap", required=True)
    ap.add_argument("--dir", required=True, help="the fixture's output directory")
    ap.add_argument("--test", choices=["import", "crash", "diff"], required=True)
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.dir, "fixture.txt")):
        print("the Linux fixture did not run (packages unavailable?): skipped")
        return SKIP
    c = Checker()
    x = Ctx(a)
    {"import": test_import, "crash": test_crash, "diff": test_diff}[a.test](c, x)
    print(f"{c.failures} failure(s)")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
