#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Fleet-start benchmark (docs/performance.md, "Warm start"): warm starts
through `vmsnap serve` / `vmsnap load --via` beside cold lazy `vmsnap load`,
alternated in one run so that both see the same machine:

- start: from the request (connect, for a warm start; fork+exec, for a cold
  one) to the guest's first serial byte, which is its first instruction
  (bench/guest.S), as this process reads it, over --starts starts of each;
  the read includes this process's own wake-up, which on a busy host waits
  for a CPU (the spinning guest holds one). So warm starts are also timed
  to the instruction itself: after its snapshot point the exit guest runs
  `xor` and then a port write, whose exit the VMM stamps (`first_exit_ns`
  of the reply);
- exit: the whole `vmsnap load [--via]` process of a guest that exits right
  after its snapshot point (bench/exit_guest.S), over --starts runs of each:
  its lifetime from posix_spawn to its exit, as bench/lifetime.cc measures
  it (Python's subprocess.run would add its own set-up and wake-up; both
  are measured for /bin/true and printed with the results);
- each of those twice: "pager", from a snapshot saved with `--compress
  zstd:3` through a server started with `--no-image-build`, so that every
  warm start pages it in with the lazy pager; and "image", from another
  save of the same guest as saved by default, through a server that builds
  its decompressed image after the first request for it (waited for before
  the measurements), so that every warm start maps that image
  copy-on-write. The cold loads are of the same two files (a lazy `vmsnap
  load` maps a fresh image too);
- clones: --clones concurrent `vmsnap load`s of one 1 GiB snapshot stored
  raw (`--compress none`, so each maps it copy-on-write), each guest writing
  32 MiB and then idling (bench/clone_guest.S): the time until every guest
  has started, and the total PSS of their processes (/proc/PID/smaps_rollup).

Run through `bench/run.sh fleet` (which builds first); prints a Markdown table.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

from bench import wait_for  # noqa: E402  (the same poll loop as the QEMU bench)

MiB = 1 << 20


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pct(xs, p):
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def settle(path):
    """Puts a program's file in the page cache as an installed one is: a
    binary the linker has just written sits there in the pieces it wrote,
    and each exec of it then maps its pages in more, smaller faults (the
    `vmsnap load --via` client lived 1.87 against 1.58 ms p50 for its byte-
    identical copy, 100 of each alternated). Written back, dropped, then
    read in order, as `cp`, `install` or a package manager would leave it,
    or a first read from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, 1 << 20):
            pass
    finally:
        os.close(fd)


class Fleet:
    def __init__(self, a):
        self.a = a
        self.vmsnap = os.path.join(a.build, "tools", "vmsnap")
        self.spin = os.path.join(a.build, "bench", "bench_guest.bin")
        self.exit_guest = os.path.join(a.build, "bench", "exit_guest.bin")
        self.clone_guest = os.path.join(a.build, "bench", "clone_guest.bin")
        self.mkimage = os.path.join(a.build, "bench", "vmsnap_bench_mkimage")
        self.launch = os.path.join(a.build, "bench", "vmsnap_bench_launch")
        self.lifetime = os.path.join(a.build, "bench", "vmsnap_bench_lifetime")
        # The whole tool, which the `vmsnap` front runs for every command
        # but `load --via` (tools/front.cc).
        tool = os.path.join(a.build, "libexec", "vmsnap", "vmsnap")
        for program in (self.vmsnap, tool, self.launch, self.lifetime):
            if os.path.exists(program):
                settle(program)
        os.makedirs(a.work, exist_ok=True)
        # Verification stamps and decompressed images of this run's
        # snapshots stay in the work directory.
        os.environ["XDG_CACHE_HOME"] = os.path.join(a.work, "cache")

    def path(self, name):
        return os.path.join(self.a.work, name)

    def image(self, mib):
        img = self.path(f"fleet-image-{mib}M.raw")
        subprocess.run([self.mkimage, img, str(mib)], check=True, capture_output=True)
        return img

    def snapshot(self, guest, img, out, spin, extra=()):
        """Runs GUEST over a copy of IMG and saves it: over the control socket
        for the spinning guest, at the doorbell for the exit guest."""
        mem = self.path("fleet-mem.raw")
        shutil.copyfile(img, mem)
        if os.path.exists(out):
            os.unlink(out)
        if spin:
            sock = self.path("fleet-save.sock")
            vm = subprocess.Popen([self.vmsnap, "run", guest, "--mem-file", mem, "--serial", "/dev/null",
                                   "--control", sock])
            wait_for(lambda: os.path.exists(sock), 60, "the control socket")
            time.sleep(0.2)
            subprocess.run([self.vmsnap, "save", "--control", sock, "--stop", out, *extra], check=True,
                           stdout=subprocess.DEVNULL)
            vm.wait()
        else:
            # The snapshot is renamed into place once complete; the clone
            # guest idles for ever after it, so it is killed then.
            vm = subprocess.Popen([self.vmsnap, "run", guest, "--mem-file", mem, "--serial", "/dev/null",
                                   "--snapshot-on-doorbell", out, *extra])
            wait_for(lambda: os.path.exists(out), 120, "the doorbell snapshot")
            if vm.poll() is None:
                vm.kill()
            vm.wait()
        os.unlink(mem)

    def warm_start(self, sock, snap):
        r, w = os.pipe()
        t0 = time.monotonic()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        req = json.dumps({"cmd": "load", "snapshot": snap}).encode() + b"\n"
        socket.send_fds(s, [req], [w, 2])
        b = os.read(r, 1)
        t = time.monotonic() - t0
        os.close(w)
        s.close()  # the worker sees the hang-up and ends the VM
        os.close(r)
        if not b:
            raise RuntimeError("warm start printed nothing")
        return t

    def warm_phases(self, sock, snap):
        """A warm start of the exit guest through the socket itself: (request
        to vCPU 0's first KVM_RUN, that KVM_RUN to the exit reply, request
        to the guest's first instructions). The second is the cost of the
        guest's first instructions (`xor`, then an `out` that exits) on
        this host, plus the reply; the third ends at that exit, as the VMM
        stamped it."""
        t0 = time.monotonic_ns()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        req = json.dumps({"cmd": "load", "snapshot": snap}).encode() + b"\n"
        devnull = os.open(os.devnull, os.O_WRONLY)
        socket.send_fds(s, [req], [devnull, 2])
        os.close(devnull)
        buf = b""
        while not buf.endswith(b"\n"):
            b = s.recv(4096)
            if not b:
                break
            buf += b
        t1 = time.monotonic_ns()
        s.close()
        reply = json.loads(buf.decode().splitlines()[-1])
        if not reply.get("ok"):
            raise RuntimeError(f"warm start failed: {reply}")
        entry = reply["first_entry_ns"]  # CLOCK_MONOTONIC, as time.monotonic_ns
        return (entry - t0) / 1e9, (t1 - entry) / 1e9, (reply["first_exit_ns"] - t0) / 1e9

    def cold_start(self, snap):
        t0 = time.monotonic()
        vm = subprocess.Popen([self.vmsnap, "load", snap, "--serial", "-"], stdout=subprocess.PIPE)
        b = vm.stdout.read(1)
        t = time.monotonic() - t0
        vm.send_signal(signal.SIGKILL)
        vm.wait()
        vm.stdout.close()
        if not b:
            raise RuntimeError("cold start printed nothing")
        return t

    def build_image(self, snap):
        """One `load --memory shared` of a snapshot whose guest exits or
        spins: builds its decompressed image, then is ended."""
        vm = subprocess.Popen([self.vmsnap, "load", snap, "--memory", "shared", "--serial", "-"],
                              stdout=subprocess.PIPE)
        vm.stdout.read(1)
        vm.kill()
        vm.wait()
        vm.stdout.close()

    def wait_image(self, snap):
        """Waits for the server's image of SNAP (a warm start asked for it)."""
        sid = json.loads(subprocess.run([self.vmsnap, "inspect", snap, "--json"], check=True,
                                        capture_output=True, text=True).stdout)["id"]
        stamp = os.path.join(self.a.work, "cache", "vmsnap", "images", sid + ".stamp")
        wait_for(lambda: os.path.exists(stamp), 300, "the server's image of " + snap)

    def whole(self, args):
        """The lifetime of one `vmsnap load` process (its serial output
        discarded, so that the launcher's stdout carries only its line)."""
        out = subprocess.run([self.lifetime, self.vmsnap, "load", *args, "--serial", "/dev/null"],
                             check=True, capture_output=True, text=True).stdout.split()
        t, rc = float(out[-2]), int(out[-1])
        if rc != 0:
            raise RuntimeError(f"vmsnap load {' '.join(args)} exited {rc}")
        return t

    def spawn_floor(self, n=50):
        """Median lifetime of /bin/true (ms): through the launcher, as the
        whole `load` is measured, and through Python's subprocess.run."""
        launcher, python = [], []
        for _ in range(n):
            out = subprocess.run([self.lifetime, "/bin/true"], check=True, capture_output=True,
                                 text=True).stdout.split()
            launcher.append(float(out[-2]))
            time.sleep(self.a.gap)
            t0 = time.monotonic()
            subprocess.run(["/bin/true"], check=True)
            python.append(time.monotonic() - t0)
            time.sleep(self.a.gap)
        return {"launcher_ms": statistics.median(launcher) * 1e3, "python_ms": statistics.median(python) * 1e3}

    def clones(self, n):
        img = self.image(1024)
        snap = self.path("fleet-clone-1024M.vmsnap")
        self.snapshot(self.clone_guest, img, snap, spin=False, extra=["--compress", "none"])
        os.unlink(img)
        # Loaded once first, as clones of a snapshot in use are: the file is
        # in the page cache, and verified (once per file state) before its
        # first mapping, so the clones map it at once.
        self.build_image(snap)
        # Started at once by a small launcher (bench/launch.cc), which then
        # only waits: a loop in this interpreter needs about a millisecond
        # of CPU per start and competed with the clones already writing.
        launcher = subprocess.Popen([self.launch, str(n), self.vmsnap, "load", snap, "--serial", "-"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            line = launcher.stdout.readline()
            if not line:
                raise RuntimeError("the clones did not all start and write their memory")
            times = json.loads(line)
            time.sleep(1)  # idle
            pss_kib = 0
            for pid in times["pids"]:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            pss_kib += int(line.split()[1])
        finally:
            launcher.stdin.close()  # the launcher kills the clones
            launcher.wait()
            launcher.stdout.close()
        if not self.a.keep:
            os.unlink(snap)
        return {"clones": n, "all_started_s": max(times["started_s"]), "spawned_s": times["spawned_s"],
                "all_written_s": max(times["written_s"]), "pss_total_mib": pss_kib / 1024,
                "pss_budget_mib": 1024 + n * 40}

    def run(self):
        res = {"date": time.strftime("%Y-%m-%d"), "loadavg_before": open("/proc/loadavg").read().split()[0],
               "cpus": os.cpu_count(), "starts": self.a.starts, "sizes": {}}
        res["true_lifetime"] = self.spawn_floor()
        for mib in self.a.sizes:
            img = self.image(mib)
            spin_snap = self.path(f"fleet-spin-{mib}M.vmsnap")
            exit_snap = self.path(f"fleet-exit-{mib}M.vmsnap")
            spin_img = self.path(f"fleet-spin-img-{mib}M.vmsnap")
            exit_img = self.path(f"fleet-exit-img-{mib}M.vmsnap")
            # Compressed, so that the pager decodes it (the default, auto,
            # may store this memory raw, which is mapped run by run).
            zstd = ["--compress", "zstd:3"]
            self.snapshot(self.spin, img, spin_snap, spin=True, extra=zstd)
            self.snapshot(self.exit_guest, img, exit_snap, spin=False, extra=zstd)
            # The same guests saved again (another snapshot id), as saved by
            # default, for starts that map the image the server builds.
            self.snapshot(self.spin, img, spin_img, spin=True)
            self.snapshot(self.exit_guest, img, exit_img, spin=False)
            os.unlink(img)
            sock = self.path("fleet.sock")
            psock = self.path("fleet-pager.sock")
            srv = subprocess.Popen([self.vmsnap, "serve", "--control", sock, "--pool", str(self.a.pool),
                                    "--mem", f"{mib}M"])
            psrv = subprocess.Popen([self.vmsnap, "serve", "--control", psock, "--pool", str(self.a.pool),
                                     "--mem", f"{mib}M", "--no-image-build"])
            r = {k: [] for k in ("warm_start", "cold_start", "warm_exit", "cold_exit",
                                 "warm_start_img", "cold_start_img", "warm_exit_img", "cold_exit_img",
                                 "warm_entry", "warm_first_insn", "warm_entry_img", "warm_first_insn_img",
                                 "warm_insn", "warm_insn_img")}
            try:
                wait_for(lambda: os.path.exists(sock), 60, "the serve socket")
                wait_for(lambda: os.path.exists(psock), 60, "the second serve socket")
                # The first warm start of each image snapshot has the server
                # build its image, off the measurements.
                self.warm_start(sock, spin_img)
                self.wait_image(spin_img)
                self.warm_phases(sock, exit_img)
                self.wait_image(exit_img)
                time.sleep(1)
                for i in range(self.a.starts):
                    # Alternated, with a pause that lets the pool refill.
                    r["warm_start"].append(self.warm_start(psock, spin_snap))
                    time.sleep(self.a.gap)
                    r["cold_start"].append(self.cold_start(spin_snap))
                    time.sleep(self.a.gap)
                    r["warm_exit"].append(self.whole(["--via", psock, exit_snap]))
                    time.sleep(self.a.gap)
                    r["cold_exit"].append(self.whole([exit_snap]))
                    time.sleep(self.a.gap)
                    r["warm_start_img"].append(self.warm_start(sock, spin_img))
                    time.sleep(self.a.gap)
                    r["cold_start_img"].append(self.cold_start(spin_img))
                    time.sleep(self.a.gap)
                    r["warm_exit_img"].append(self.whole(["--via", sock, exit_img]))
                    time.sleep(self.a.gap)
                    r["cold_exit_img"].append(self.whole([exit_img]))
                    time.sleep(self.a.gap)
                    for sfx, snap, via in (("", exit_snap, psock), ("_img", exit_img, sock)):
                        entry, first, insn = self.warm_phases(via, snap)
                        r["warm_entry" + sfx].append(entry)
                        r["warm_first_insn" + sfx].append(first)
                        r["warm_insn" + sfx].append(insn)
                        time.sleep(self.a.gap)
                    if (i + 1) % 10 == 0:
                        log(f"{mib} MiB: {i + 1}/{self.a.starts}: warm start "
                            f"{statistics.median(r['warm_start']) * 1e3:.2f} ms median, from the image "
                            f"{statistics.median(r['warm_start_img']) * 1e3:.2f} ms")
            finally:
                for p in (srv, psrv):
                    p.send_signal(signal.SIGTERM)
                    p.wait()
            stats = {}
            for k, xs in r.items():
                stats[k] = {"p50_ms": pct(xs, 50) * 1e3, "p99_ms": pct(xs, 99) * 1e3,
                            "min_ms": min(xs) * 1e3, "max_ms": max(xs) * 1e3}
            res["sizes"][str(mib)] = {"stats": stats, "raw": r,
                                      "stored_bytes": os.path.getsize(exit_snap)}
            if not self.a.keep:
                for f in (spin_snap, exit_snap, spin_img, exit_img):
                    os.unlink(f)
        if self.a.clones:
            res["clones"] = self.clones(self.a.clones)
        res["loadavg_after"] = open("/proc/loadavg").read().split()[0]
        with open(self.path("fleet-results.json"), "w") as f:
            json.dump(res, f, indent=1)
        print(table(res))


def table(res):
    out = [f"Fleet start, {res['date']}, {res['cpus']} CPUs, {res['starts']} starts of each, alternated "
           f"(load average {res['loadavg_before']} before, {res['loadavg_after']} after)", "",
           "| RAM | measure | warm p50 | warm p99 | cold p50 | cold p99 | cold/warm (p50) | target (warm) |",
           "|---|---|---|---|---|---|---|---|"]
    phases = []
    for mib, v in res["sizes"].items():
        s = v["stats"]
        g = f"{int(mib) // 1024} GiB" if int(mib) >= 1024 else f"{mib} MiB"
        for what, w, c, tgt in (("request to first guest instruction, stamped by the VMM (pager)", "warm_insn",
                                 None, "p50 <= 2 ms, p99 <= 5 ms"),
                                ("request to first guest instruction, stamped by the VMM (image)",
                                 "warm_insn_img", None, "p50 <= 2 ms, p99 <= 5 ms"),
                                ("request to first serial byte, as a client reads it (pager)", "warm_start",
                                 "cold_start", "(the same)"),
                                ("request to first serial byte, as a client reads it (image)", "warm_start_img",
                                 "cold_start_img", "(the same)"),
                                ("whole `load` of a guest that exits at once (pager)", "warm_exit", "cold_exit",
                                 "p50 <= 3 ms, p99 <= 8 ms"),
                                ("whole `load` of a guest that exits at once (image)", "warm_exit_img",
                                 "cold_exit_img", "p50 <= 3 ms, p99 <= 8 ms")):
            cold = (f"{s[c]['p50_ms']:.2f} ms | {s[c]['p99_ms']:.2f} ms | {s[c]['p50_ms'] / s[w]['p50_ms']:.1f}x"
                    if c else "- | - | -")
            out.append(f"| {g} | {what} | {s[w]['p50_ms']:.2f} ms | {s[w]['p99_ms']:.2f} ms | {cold} | {tgt} |")
        for sfx, how in (("", "pager"), ("_img", "image")):
            phases.append(f"- {g}, {how}: a warm start of the exit guest from the request to vCPU 0's first "
                          f"KVM_RUN {s['warm_entry' + sfx]['p50_ms']:.2f} ms p50, "
                          f"{s['warm_entry' + sfx]['p99_ms']:.2f} ms p99; from that KVM_RUN to the exit's "
                          f"reply (the guest's first instructions, then the answer) "
                          f"{s['warm_first_insn' + sfx]['p50_ms']:.2f} ms p50, "
                          f"{s['warm_first_insn' + sfx]['p99_ms']:.2f} ms p99")
    out += [""] + phases
    f = res.get("true_lifetime")
    if f:
        out += ["", f"The whole `load` is the process's lifetime from posix_spawn to its exit (bench/lifetime.cc). "
                f"/bin/true lives {f['launcher_ms']:.2f} ms so measured, and {f['python_ms']:.2f} ms "
                f"through Python's subprocess.run (p50 of 50)."]
    c = res.get("clones")
    if c:
        out += ["", f"{c['clones']} clones of a 1 GiB raw snapshot, each writing 32 MiB then idling: all started "
                f"in {c['all_started_s'] * 1e3:.0f} ms (target <= 1000 ms); total PSS {c['pss_total_mib']:.0f} MiB "
                f"(target <= {c['pss_budget_mib']} MiB)"]
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--build", required=True)
    p.add_argument("--work", default="/var/tmp/vmsnap-bench")
    p.add_argument("--sizes", default="1024,4096", help="guest memory sizes in MiB")
    p.add_argument("--starts", type=int, default=100)
    p.add_argument("--pool", type=int, default=2)
    p.add_argument("--gap", type=float, default=0.05, help="seconds between two measurements")
    p.add_argument("--clones", type=int, default=50, help="0: skip the clone measurement")
    p.add_argument("--keep", action="store_true")
    a = p.parse_args()
    a.sizes = [int(s) for s in a.sizes.split(",")]
    Fleet(a).run()


if __name__ == "__main__":
    main()
