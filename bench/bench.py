#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""vmsnap beside QEMU on the same guest memory: save (the default codec, auto,
beside QEMU; auto beside none, zstd:1 and zstd:3 on disk and on tmpfs), file
size, peak RSS, a live save while the guest writes, eager load, lazy load to
the first guest instruction; and the machine's limits.
Run through bench/run.sh (which builds first); prints a Markdown table and
writes every measurement to WORK/results.json. See docs/performance.md."""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "qemu"))
from qmp import Qmp, kill  # noqa: E402  (the QMP client shared with the QEMU tests)

MiB = 1 << 20
# The codecs compared in one run, by where the file goes: on tmpfs the CPU is
# the only bound; zstd:3 (the former default) on disk for its CPU per GiB.
CODECS = {"disk": ["auto", "none", "zstd:1", "zstd:3"], "tmpfs": ["auto", "none", "zstd:1"]}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.005)
    raise RuntimeError(f"timed out waiting for {what}")


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    """User + system CPU seconds of a process (all threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle():
    """Writes back every dirty page before a timed save: otherwise a save
    that follows another one (GiBs written a moment before) is throttled
    and charged with the kernel's writeback of its predecessor's file, and
    its time and CPU seconds say more about the order than about itself."""
    os.sync()


class Bench:
    def __init__(self, a):
        self.a = a
        self.vmsnap = os.path.join(a.build, "tools", "vmsnap")
        self.guest = os.path.join(a.build, "bench", "bench_guest.bin")
        self.live_guest = os.path.join(a.build, "bench", "live_guest.bin")
        self.mkimage = os.path.join(a.build, "bench", "vmsnap_bench_mkimage")
        self.limits_bin = os.path.join(a.build, "bench", "vmsnap_bench_limits")
        self.work = a.work
        self.qemu = a.qemu
        os.makedirs(self.work, exist_ok=True)

    def path(self, name):
        return os.path.join(self.work, name)

    # --- the memory image -------------------------------------------------
    def image(self, mib):
        img = self.path(f"image-{mib}M.raw")
        log(f"generating {img}")
        out = subprocess.run([self.mkimage, img, str(mib)], check=True, capture_output=True, text=True)
        # Written back before anything is timed, so no save pays for it.
        subprocess.run(["sync", img], check=True)
        return img, json.loads(out.stdout)

    def linux_image(self):
        """Guest memory of a real Linux guest: Debian's cloud kernel after the
        Linux test fixture's workload filled tmpfs and the page cache (kernel
        text, page cache, slab, free pages), taken from QEMU's migration
        stream through vmsnap's import and a raw export."""
        fixture = self.a.linux_fixture
        stream = os.path.join(fixture, "a.stream")
        if not os.path.exists(stream):
            log(f"booting the Linux fixture into {fixture}")
            subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                         "tests", "linux", "linux_fixture.py"),
                            "--out", fixture], check=True)
        snap = self.path("linux.vmsnap")
        img = self.path("image-linux.raw")
        for f in (snap, img):
            if os.path.exists(f):
                os.unlink(f)
        subprocess.run([self.vmsnap, "import", "qemu", stream, "-o", snap], check=True, capture_output=True)
        subprocess.run([self.vmsnap, "export", snap, "--format", "raw", "-o", img], check=True)
        os.unlink(snap)
        size = os.path.getsize(img)
        zero, page = 0, b"\0" * 4096
        with open(img, "rb") as f:
            while True:
                b = f.read(4096)
                if not b:
                    break
                zero += b == page[:len(b)]
        subprocess.run(["sync", img], check=True)
        return img, {"source": "Linux guest (tests/linux fixture)", "zero_pages": zero,
                     "pages": size // 4096}

    # --- vmsnap -------------------------------------------------------------
    def vmsnap_save(self, img, out, extra=(), guest=None):
        """Seconds, file size, peak RSS and CPU seconds of the VMM process
        saving `img`'s guest to `out` (and, with guest, the save's stdout)."""
        sock = self.path("vmsnap.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        vm = subprocess.Popen([self.vmsnap, "run", guest or self.guest, "--mem-file", img, "--serial", "/dev/null",
                               "--control", sock], stdout=subprocess.DEVNULL)
        try:
            wait_for(lambda: os.path.exists(sock), 60, "the control socket")
            time.sleep(0.3)  # the guest is spinning on the serial port
            if os.path.exists(out):
                os.unlink(out)
            settle()
            c0 = cpu_s(vm.pid)
            t0 = time.monotonic()
            said = subprocess.run([self.vmsnap, "save", "--control", sock, out, *extra], check=True,
                                  stdout=subprocess.PIPE, text=True).stdout
            t = time.monotonic() - t0
            cpu = cpu_s(vm.pid) - c0
            rss = vm_hwm_kib(vm.pid) * 1024
        finally:
            kill(vm)
        size = os.path.getsize(out)
        if guest:
            return t, size, rss, cpu, said
        return t, size, rss, cpu

    def vmsnap_load(self, snap, mode):
        """Seconds from starting `vmsnap load` to the guest's first serial byte."""
        t0 = time.monotonic()
        vm = subprocess.Popen([self.vmsnap, "load", snap, "--memory", mode, "--serial", "-"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            b = vm.stdout.read(1)
            t = time.monotonic() - t0
            cpu = cpu_s(vm.pid)
            if not b:
                raise RuntimeError(f"vmsnap load --memory {mode} printed nothing: "
                                   f"{vm.stderr.read().decode(errors='replace')}")
        finally:
            kill(vm)
        return t, cpu

    # --- QEMU ---------------------------------------------------------------
    def qemu_cmd(self, mib, backend, sock):
        return [self.qemu, "-accel", "kvm", "-machine", "q35,memory-backend=m", "-m", f"{mib}M",
                "-object", backend, "-nodefaults", "-nographic", "-display", "none", "-S",
                "-qmp", f"unix:{sock},server=on,wait=off"]

    def qemu_save(self, img, mib, out):
        sock = self.path("qemu.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        # share=off: the image is mapped private, so QEMU reads its contents and
        # never writes to it.
        backend = f"memory-backend-file,id=m,size={mib}M,mem-path={img},share=off"
        vm = subprocess.Popen(self.qemu_cmd(mib, backend, sock), stdout=subprocess.DEVNULL)
        try:
            q = Qmp(sock)
            q.cmd("migrate-set-parameters", **{"max-bandwidth": 1 << 40})
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            settle()
            c0 = cpu_s(vm.pid)
            t0 = time.monotonic()
            q.cmd("getfd", fds=[fd], fdname="out")
            q.cmd("migrate", uri="fd:out")
            q.wait_migration("migration")
            os.fsync(fd)  # the same durability as vmsnap's save
            t = time.monotonic() - t0
            cpu = cpu_s(vm.pid) - c0
            os.close(fd)
            rss = vm_hwm_kib(vm.pid) * 1024
            q.close()
        finally:
            kill(vm)
        return t, os.path.getsize(out), rss, cpu

    def qemu_load(self, snap, mib):
        sock = self.path("qemu-in.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        backend = f"memory-backend-ram,id=m,size={mib}M"
        t0 = time.monotonic()
        vm = subprocess.Popen(self.qemu_cmd(mib, backend, sock) + ["-incoming", f"exec:cat {snap}"],
                              stdout=subprocess.DEVNULL)
        try:
            q = Qmp(sock)
            q.wait_migration("incoming migration")
            t = time.monotonic() - t0
            cpu = cpu_s(vm.pid)
            q.close()
        finally:
            kill(vm)
        return t, cpu

    # --- everything ---------------------------------------------------------
    def run(self):
        results = {"date": datetime.date.today().isoformat(), "host": platform.node(),
                   "kernel": platform.release(), "cpus": os.cpu_count(), "runs": self.a.runs,
                   "sizes": {}}
        results["loadavg"] = open("/proc/loadavg").read().split()[0]
        qv = subprocess.run([self.qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        results["qemu"] = qv
        for entry in self.a.sizes:
            if entry == "linux":
                img, mix = self.linux_image()
                mib = os.path.getsize(img) // MiB
                key = f"linux-{mib}"
            else:
                mib = entry
                img, mix = self.image(mib)
                key = str(mib)
            if entry == self.a.sizes[0]:
                log("measuring the machine's limits")
                out = subprocess.run([self.limits_bin, img, self.path("scratch.tmp"), "3"], check=True,
                                     capture_output=True, text=True).stdout
                results["limits"] = json.loads(out)
            keys = ["vmsnap_save_s", "vmsnap_save_cpu", "vmsnap_size", "vmsnap_rss", "vmsnap_eager_s",
                    "vmsnap_eager_cpu", "vmsnap_lazy_s", "vmsnap_lazy_cpu", "qemu_save_s", "qemu_save_cpu",
                    "qemu_size", "qemu_rss", "qemu_load_s", "qemu_load_cpu", "live_s", "live_pause_ms",
                    "live_rounds", "live_size"]
            for where in ("disk", "tmpfs"):
                for codec in CODECS[where]:
                    keys += [f"{where}_{codec}_{m}" for m in ("s", "cpu", "size")]
            r = {"mix": mix, "mib": mib, **{k: [] for k in keys}}
            snap = self.path(f"vmsnap-{mib}M.vmsnap")
            qfile = self.path(f"qemu-{mib}M.mig")
            dirs = {"disk": self.work, "tmpfs": self.a.tmpfs}

            def add(**kv):
                for k, v in kv.items():
                    r[k].append(v)

            def codec_save(where, codec):
                out = snap if where == "disk" and codec == "auto" else \
                    os.path.join(dirs[where], f"vmsnap-{mib}M-{codec.replace(':', '')}.vmsnap")
                extra = [] if codec == "auto" else ["--compress", codec]  # auto is the default
                t, size, rss, cpu = self.vmsnap_save(img, out, extra)
                add(**{f"{where}_{codec}_s": t, f"{where}_{codec}_cpu": cpu, f"{where}_{codec}_size": size})
                if where == "disk" and codec == "auto":
                    add(vmsnap_save_s=t, vmsnap_size=size, vmsnap_rss=rss, vmsnap_save_cpu=cpu)
                else:
                    os.unlink(out)
                log(f"  {where} {codec}: {t:.3f} s ({cpu:.2f} CPU s), {size / MiB:.1f} MiB, "
                    f"peak RSS {rss / MiB:.0f} MiB")

            def qemu_save():
                t, size, rss, cpu = self.qemu_save(img, mib, qfile)
                add(qemu_save_s=t, qemu_size=size, qemu_rss=rss, qemu_save_cpu=cpu)
                log(f"  QEMU save {t:.3f} s ({cpu:.2f} CPU s), {size / MiB:.1f} MiB")

            for i in range(self.a.runs):
                log(f"{mib} MiB run {i + 1}/{self.a.runs}")
                # Alternated, the order rotated from run to run and reversed
                # every other run, so that neither a drift of the machine's
                # speed nor the save before (a large file written back or
                # deleted) lands on one program more than another.
                steps = [lambda: codec_save("disk", "auto"), qemu_save] + \
                    [lambda c=c: codec_save("disk", c) for c in CODECS["disk"] if c != "auto"] + \
                    [lambda c=c: codec_save("tmpfs", c) for c in CODECS["tmpfs"]]
                k = i % len(steps)
                order = steps[k:] + steps[:k]
                for step in (order[::-1] if i % 2 else order):
                    step()
                t, cpu = self.vmsnap_load(snap, "eager")
                add(vmsnap_eager_s=t, vmsnap_eager_cpu=cpu)
                log(f"  eager load {t:.3f} s ({cpu:.2f} CPU s)")
                # A start takes milliseconds and varies with what else the
                # machine does: several per run, all in the median.
                for _ in range(self.a.lazy_starts):
                    t, cpu = self.vmsnap_load(snap, "lazy")
                    add(vmsnap_lazy_s=t, vmsnap_lazy_cpu=cpu)
                    log(f"  lazy load {t * 1e3:.1f} ms ({cpu * 1e3:.0f} CPU ms)")
                t, cpu = self.qemu_load(qfile, mib)
                add(qemu_load_s=t, qemu_load_cpu=cpu)
                log(f"  QEMU load {t:.3f} s ({cpu:.2f} CPU s)")
                if isinstance(entry, int) and mib <= self.a.live_max_mib:
                    live = self.path(f"vmsnap-{mib}M-live.vmsnap")
                    t, size, _, _, said = self.vmsnap_save(img, live, ["--live"], guest=self.live_guest)
                    m = re.search(r"live: (\d+) rounds, paused ([0-9.]+) ms", said)
                    if not m:
                        raise RuntimeError(f"save --live printed no pause: {said!r}")
                    add(live_s=t, live_rounds=int(m.group(1)), live_pause_ms=float(m.group(2)), live_size=size)
                    log(f"  live save while the guest writes: {t:.3f} s, {m.group(1)} rounds, "
                        f"paused {m.group(2)} ms, {size / MiB:.1f} MiB")
                    os.unlink(live)
            for k in list(r):
                if isinstance(r[k], list) and r[k]:
                    r[k + "_median"] = statistics.median(r[k])
            results["sizes"][key] = r
            for f in (snap, qfile):
                if os.path.exists(f) and not self.a.keep:
                    os.unlink(f)
            if not self.a.keep:
                os.unlink(img)
        results["loadavg_end"] = open("/proc/loadavg").read().split()[0]
        with open(self.path("results.json"), "w") as f:
            json.dump(results, f, indent=1)
        print(table(results))


def table(res):
    L = res["limits"]
    load = res.get("loadavg", "")
    out = [f"Measured {res['date']} on {res['cpus']} cores, Linux {res['kernel']}, {res['qemu']}; "
           f"median of {res['runs']} runs; both sides fsync their file; load average at the start "
           f"{load}{', at the end ' + res['loadavg_end'] if res.get('loadavg_end') else ''}.", ""]
    out.append("| guest memory | | vmsnap | QEMU | ratio (speed: QEMU time / vmsnap time; size: vmsnap / QEMU) "
               "| target | met |")
    out.append("|---|---|---|---|---|---|---|")
    codec_rows = []
    for key, r in res["sizes"].items():
        mib = r.get("mib", key)
        gib = int(mib) / 1024
        g = f"{int(mib) // 1024} GiB" if int(mib) >= 1024 else f"{mib} MiB"
        if key.startswith("linux"):
            g = f"Linux, {g}"
        vs, qs = r["vmsnap_save_s_median"], r["qemu_save_s_median"]
        vz, qz = r["vmsnap_size_median"], r["qemu_size_median"]
        ve, ql = r["vmsnap_eager_s_median"], r["qemu_load_s_median"]
        lz = r["vmsnap_lazy_s_median"]
        rss = r["vmsnap_rss_median"]
        limit = int(mib) * MiB + 256 * MiB
        out.append(f"| {g} | save time (default codec, auto) | {vs:.2f} s | {qs:.2f} s | {qs / vs:.2f}x | "
                   f">= 1.4x | {'yes' if qs / vs >= 1.4 else 'no'} |")
        out.append(f"| {g} | file size (auto) | {vz / MiB:.0f} MiB | {qz / MiB:.0f} MiB | {vz / qz:.2f}x | "
                   f"<= 0.70x | {'yes' if vz / qz <= 0.70 else 'no'} |")
        out.append(f"| {g} | save peak RSS | {rss / MiB:.0f} MiB | {r['qemu_rss_median'] / MiB:.0f} MiB | | "
                   f"<= {limit // MiB} MiB | {'yes' if rss <= limit else 'no'} |")
        for codec, target in (("zstd:3", 1.2), ("none", 0.3), ("auto", None)):
            c = r.get(f"disk_{codec}_cpu_median")
            if c is None:
                continue
            per = c / gib
            out.append(f"| {g} | save CPU seconds per GiB, `{codec}` | {per:.2f} | "
                       f"{r['qemu_save_cpu_median'] / gib:.2f} | | "
                       + (f"<= {target} | {'yes' if per <= target else 'no'} |" if target else "| |"))
        out.append(f"| {g} | eager load (to first guest instruction) | {ve:.2f} s | {ql:.2f} s (incoming "
                   f"completed) | {ql / ve:.2f}x | >= 2x | {'yes' if ql / ve >= 2 else 'no'} |")
        out.append(f"| {g} | CPU seconds: eager load / lazy load | "
                   f"{r['vmsnap_eager_cpu_median']:.2f} / {r['vmsnap_lazy_cpu_median']:.3f} | "
                   f"{r['qemu_load_cpu_median']:.2f} / - | | | |")
        out.append(f"| {g} | lazy load (to first guest instruction) | {lz * 1e3:.1f} ms | | | <= 10 ms | "
                   f"{'yes' if lz <= 0.010 else 'no'} |")
        if r.get("live_s"):
            out.append(f"| {g} | live save while the guest writes: total / pause | {r['live_s_median']:.2f} s / "
                       f"{r['live_pause_ms_median']:.1f} ms ({r['live_rounds_median']:.0f} rounds, "
                       f"{r['live_size_median'] / MiB:.0f} MiB) | | | | |")
        for where in ("disk", "tmpfs"):
            times = {c: r.get(f"{where}_{c}_s_median") for c in CODECS[where]}
            if None in times.values():
                continue
            best = min(times["none"], times["zstd:1"])
            cells = []
            for c in CODECS[where]:
                cells.append(f"`{c}` {times[c]:.2f} s, {r[f'{where}_{c}_cpu_median']:.2f} CPU s, "
                             f"{r[f'{where}_{c}_size_median'] / MiB:.0f} MiB")
            ratio = times["auto"] / best
            codec_rows.append(f"| {g} | {where} | {'; '.join(cells)} | {ratio:.2f}x | <= 1.10x | "
                              f"{'yes' if ratio <= 1.10 else 'no'} |")
    if codec_rows:
        out += ["", "| guest memory | output | save time, CPU seconds, file size (medians) "
                "| auto / faster of none and zstd:1 | target | met |", "|---|---|---|---|---|---|"] + codec_rows
    out.append("")
    out.append(f"Machine limits: memcpy {L['memcpy_gbs']:.2f} GB/s; zstd -{L['zstd_level']} on one core "
               f"{L['zstd_compress_mbs']:.0f} MB/s compress, {L['zstd_decompress_mbs']:.0f} MB/s decompress "
               f"(ratio {L['zstd_ratio']:.2f} on the non-zero pages); disk write with fsync "
               f"{L['disk_write_fsync_mbs']:.0f} MB/s.")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--build", required=True)
    p.add_argument("--work", default="/var/tmp/vmsnap-bench")
    p.add_argument("--sizes", default="1024,4096,linux",
                   help="guest memory sizes in MiB; 'linux' is the Linux guest's memory (tests/linux)")
    p.add_argument("--linux-fixture", default="/var/tmp/vmsnap-bench/linux",
                   help="the Linux fixture's directory (booted there when it holds no a.stream)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--lazy-starts", type=int, default=5, help="lazy loads per run")
    p.add_argument("--qemu", default="qemu-system-x86_64")
    p.add_argument("--keep", action="store_true", help="keep images and snapshots")
    p.add_argument("--tmpfs", default="/dev/shm", help="a tmpfs directory for the saves measured there")
    p.add_argument("--live-max-mib", type=int, default=1024,
                   help="measure a live save (while the guest writes) for images up to this size")
    p.add_argument("--table-only", action="store_true", help="print the table of WORK/results.json")
    a = p.parse_args()
    a.sizes = [s if s == "linux" else int(s) for s in a.sizes.split(",")]
    if a.table_only:
        with open(os.path.join(a.work, "results.json")) as f:
            print(table(json.load(f)))
        return
    if shutil.which(a.qemu) is None:
        sys.exit(f"{a.qemu} not found (Debian package qemu-system-x86)")
    Bench(a).run()


if __name__ == "__main__":
    main()
