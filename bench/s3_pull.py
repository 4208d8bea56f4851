#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""CPU per GiB of `vmsnap pull` from an s3:// store (docs/performance.md,
"Snapshots in a Ceph cluster"), two vmsnap binaries alternated in one run.

The 1 GiB bench snapshot (store.py's: bench_guest on mkimage's memory mix) is
pushed once to radosgw on the tests' single-node cluster
(tests/store/ceph-cluster), then pulled --runs times by each binary, the
order swapped every run; each pull's client CPU seconds (user + system)
and wall time are taken, the pulled file compared with the pushed one, and
the medians printed with the load average.

    bench/s3_pull.py --build BUILD --old OTHER_VMSNAP [--runs 5] [--work DIR]

BUILD must hold tools/vmsnap, bench/bench_guest.bin and
bench/vmsnap_bench_mkimage. Needs root (KVM) and Ceph's daemons.
"""
import argparse
import filecmp
import os
import statistics
import subprocess
import time

from store import POOL, StoreBench, log  # noqa: E402  (the store bench's cluster and snapshot)

GiB = float(1 << 30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--old", required=True, help="the vmsnap binary to compare with the build's")
    ap.add_argument("--work", default="/tmp/vmsnap-s3-pull-bench")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    b = StoreBench(a)
    subprocess.run([b.cluster, "start", b.ceph, POOL], check=True,
                   env=dict(os.environ, VMSNAP_CEPH_OSD_BYTES=str(16 << 30)))
    try:
        with open(os.path.join(b.ceph, "s3.env")) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                if k:
                    b.env[k] = v
        img, snap = b.path("s3-image.raw"), b.path("s3-snap.vmsnap")
        b.run([b.mkimage, img, "1024"])
        log("saving the bench snapshot")
        b.save_spin(img, snap)
        os.unlink(img)
        url = "s3://vmsnap/bench/snap"
        b.run([b.vmsnap, "push", snap, url])
        size = os.path.getsize(snap)
        res = {"old": {"cpu": [], "wall": []}, "new": {"cpu": [], "wall": []}}
        out = b.path("s3-pulled.vmsnap")
        for r in range(a.runs):
            for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
                binary = b.old if which == "old" else b.vmsnap
                if os.path.exists(out):
                    os.unlink(out)
                t0 = time.monotonic()
                b.timed(lambda: b.run([binary, "pull", url, "-o", out]))
                wall = time.monotonic() - t0
                cpu = b.last_cpu[0]  # the client's; the OSD's is [1]
                if not filecmp.cmp(out, snap, shallow=False):
                    raise SystemExit(f"{which}: the pulled file differs from the pushed one")
                res[which]["cpu"].append(cpu * GiB / size)
                res[which]["wall"].append(wall)
                log(f"run {r} {which}: {cpu * GiB / size:.2f} CPU-s/GiB, {size / wall / (1 << 20):.0f} MiB/s")
        load = open("/proc/loadavg").read().split()[:3]
        print(f"s3:// pull of {size / GiB:.2f} GiB, {a.runs} runs each, medians; load average {' '.join(load)}")
        for which in ("old", "new"):
            cpu = statistics.median(res[which]["cpu"])
            wall = statistics.median(res[which]["wall"])
            print(f"  {which}: client {cpu:.2f} CPU-s per GiB, {size / wall / (1 << 20):.0f} MiB/s")
    finally:
        subprocess.run([b.cluster, "stop", b.ceph])


if __name__ == "__main__":
    main()
