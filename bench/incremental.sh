#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Incremental snapshot size against the share of guest memory dirtied.
# A 1 GiB guest whose RAM starts full of random bytes (--mem-file), so a full
# snapshot of it is about 1 GiB at any point, rings the doorbell once, then
# after dirtying 1%, 10% and 50% of its pages (tests/dirty/guests/bench_dirty.S:
# every 100th, 10th, 2nd page from 4 MiB up, 72 bytes rewritten in each).
# With --incremental each snapshot after the first stores only the pages
# dirtied since the one before. Prints each snapshot's size beside the full
# one's.
#   bench/incremental.sh [BUILD_DIR]      (default: build)
#   DIRTY_TRACKING=ring bench/incremental.sh build
# The default is the bitmap: on this machine's KVM, guest writes to
# file-backed (--mem-file) RAM are emulated one by one and each pushes a ring
# entry, so the ring overfills and the tracker falls back to reporting every
# page (docs/checkpoint-cycles.md); with anonymous RAM the ring is exact.
set -euo pipefail
build=${1:-build}
vmsnap=$(realpath "$build/tools/vmsnap")
guest=$(realpath "$build/tests/dirty/bench_dirty.elf")
mode=${DIRTY_TRACKING:-bitmap}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-incr-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

head -c 1G /dev/urandom > ram.img
t0=$(date +%s.%N)
"$vmsnap" run "$guest" --mem-file ram.img --dirty-tracking "$mode" \
  --snapshot-on-doorbell 'snap-{n}.vmsnap' --incremental --serial /dev/null
t1=$(date +%s.%N)

field() {  # field FILE KEY: memory.KEY from inspect --json
  "$vmsnap" inspect --json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['memory']['$2'])"
}
full=$(stat -c %s snap-1.vmsnap)
echo "guest RAM 1 GiB of random bytes; dirty tracking: $mode; run with 4 snapshots took $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s"
printf '%-22s %12s %14s %12s %10s\n' snapshot pages_stored bytes MiB of_full
labels=("" "1: full (base)" "2: 1% dirtied" "3: 10% dirtied" "4: 50% dirtied")
for n in 1 2 3 4; do
  size=$(stat -c %s "snap-$n.vmsnap")
  pages=$(field "snap-$n.vmsnap" present_pages)
  printf '%-22s %12s %14s %12.1f %9.1f%%\n' "${labels[$n]}" "$pages" "$size" \
    "$(echo "$size / 1048576" | bc -l)" "$(echo "100 * $size / $full" | bc -l)"
done
