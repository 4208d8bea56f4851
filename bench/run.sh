#!/bin/sh
# SPDX-License-Identifier: MIT
# The benchmark in one command: builds vmsnap and the bench helpers (Release),
# then measures vmsnap beside QEMU on 1 GiB and 4 GiB guests and on a real
# Linux guest's memory (tests/linux) and prints the table that
# docs/performance.md shows. Needs root (KVM, userfaultfd), QEMU
# (qemu-system-x86) and about 12 GiB free under WORK.
#
#   bench/run.sh [--runs N] [--sizes 1024,4096] [--work DIR] [--keep]
#   bench/run.sh fleet [--starts 100] [--sizes 1024,4096] [--clones 50] [--work DIR]
#   bench/run.sh store [--runs 3] [--starts 10] [--work DIR]
#
# Without `fleet`, the comparison with QEMU runs first, then the fleet
# benchmark with its defaults. `fleet` alone measures warm starts (vmsnap
# serve / load --via) beside cold ones, and clones sharing one snapshot
# (bench/fleet.py); it needs no QEMU.
#
# `store` measures push, pull and `load rados://` on a single-node Ceph
# cluster beside `rados bench` on the same pool (bench/store.py); it needs
# Ceph's daemons (ceph-mon, ceph-mgr, ceph-osd) and no QEMU.
#
# BUILD (default build-bench beside the sources) may name an existing build.
set -eu
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$SRC/build-bench}
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -S "$SRC" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DVMSNAP_BUILD_TESTS=OFF >/dev/null
fi
if [ "${1:-}" = fleet ]; then
  shift
  ninja -C "$BUILD" vmsnap vmsnap_bench_mkimage vmsnap_bench_guest vmsnap_bench_fleet_guests vmsnap_bench_launch vmsnap_bench_lifetime >/dev/null
  exec python3 "$SRC/bench/fleet.py" --build "$BUILD" "$@"
fi
if [ "${1:-}" = store ]; then
  shift
  # The read-everything guest is a test guest (tests/guests/allpages.S).
  cmake -S "$SRC" -B "$BUILD" -DVMSNAP_BUILD_TESTS=ON >/dev/null
  ninja -C "$BUILD" vmsnap vmsnap_bench_mkimage vmsnap_bench_guest vmsnap_guests vmsnap_bench_rados_start >/dev/null
  exec python3 "$SRC/bench/store.py" --build "$BUILD" "$@"
fi
ninja -C "$BUILD" vmsnap vmsnap_bench_mkimage vmsnap_bench_limits vmsnap_bench_guest \
  vmsnap_bench_fleet_guests vmsnap_bench_launch vmsnap_bench_lifetime >/dev/null
python3 "$SRC/bench/bench.py" --build "$BUILD" "$@"
# The fleet table (warm and cold start percentiles, clone PSS and start
# time) in the same work directory, if one was named.
fleet_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --work) fleet_args="--work $2"; shift ;;
  esac
  shift
done
exec python3 "$SRC/bench/fleet.py" --build "$BUILD" $fleet_args
