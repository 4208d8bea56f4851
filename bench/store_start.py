#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A fresh `vmsnap load rados://...` to the guest's first serial byte (its
first instruction), alone: the store bench's row (bench/store.py) without
its push, pull and `rados bench` runs, on the same single-node cluster and
the same 1 GiB bench snapshot, for before/after comparisons of the start.

Alternated in each round: `load FILE`, then for this build and for --old
(another vmsnap binary) a load with a warm cache (each binary its own cache
folder, filled by one load first) and one with an empty cache. Prints the
medians as a Markdown table, and the load average before and after.

    python3 bench/store_start.py --build BUILD [--old OTHER/vmsnap] [--starts 15] [--work DIR] [--mem-mib 1024]
"""
import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from store import POOL, StoreBench, log  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", required=True)
    p.add_argument("--old", help="another vmsnap binary, alternated with the build's")
    p.add_argument("--starts", type=int, default=15)
    p.add_argument("--work", default="/var/tmp/vmsnap-store-start")
    p.add_argument("--mem-mib", type=int, default=1024, help="the guest's memory (the store bench's is 1024)")
    a = p.parse_args()
    a.runs, a.seconds = 1, 1  # StoreBench's, unused here
    b = StoreBench(a)
    res = {"date": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"),
           "load_before": open("/proc/loadavg").read().split()[:3]}
    log("starting the cluster")
    subprocess.run([b.cluster, "start", b.ceph, POOL], check=True)
    try:
        img, snap = b.path("start-image.raw"), b.path("start-a.vmsnap")
        b.run([b.mkimage, img, str(a.mem_mib)])
        b.save_spin(img, snap)
        os.unlink(img)
        b.push(snap, "a")
        url = f"rados://{POOL}/a"
        bins = {"new": b.vmsnap}
        if b.old:
            bins["old"] = b.old
        times = {"file": []}
        for n, vm in bins.items():
            warm = b.path(f"cache-warm-{n}")
            shutil.rmtree(warm, ignore_errors=True)
            b.first_byte(url, warm, vmsnap=vm)  # fills the warm cache (and, for this build, its record)
            times[n + "_warm"], times[n + "_cold"] = [], []
        for i in range(a.starts):
            times["file"].append(b.first_byte(snap))
            # Which binary goes first alternates from round to round.
            order = list(bins.items()) if i % 2 == 0 else list(reversed(bins.items()))
            for n, vm in order:
                times[n + "_warm"].append(b.first_byte(url, b.path(f"cache-warm-{n}"), vmsnap=vm))
                cold = b.path(f"cache-cold-{n}")
                shutil.rmtree(cold, ignore_errors=True)
                times[n + "_cold"].append(b.first_byte(url, cold, vmsnap=vm))
            log(f"round {i + 1}/{a.starts}: " + ", ".join(f"{k} {v[-1] * 1e3:.1f}" for k, v in times.items()))
    finally:
        subprocess.run([b.cluster, "stop", b.ceph])
    res["load_after"] = open("/proc/loadavg").read().split()[:3]
    print(f"{res['date']}, {a.mem_mib} MiB guest, {a.starts} starts each, load average {' '.join(res['load_before'])} before, "
          f"{' '.join(res['load_after'])} after\n")
    print("| first guest instruction | p50 ms | min ms | max ms |")
    print("|---|---|---|---|")
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v) * 1e3:.1f} | {min(v) * 1e3:.1f} | {max(v) * 1e3:.1f} |")


if __name__ == "__main__":
    main()
