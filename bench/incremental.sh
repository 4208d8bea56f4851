#!/usr/bin/env bash
# Incremental snapshot size against the share of guest memory dirtied.
# A 1 GiB guest (tests/dirty/guests/bench_dirty.S) rings the doorbell with its
# memory almost empty, then after dirtying 1%, 10% and 50% of its pages (64
# bytes of pseudo-random data at the start of each). Run once with
# --incremental (each snapshot after the first stores only the pages dirtied
# since the one before) and once without (every snapshot full), and print both
# sizes side by side.
#   bench/incremental.sh [BUILD_DIR]      (default: build)
#   DIRTY_TRACKING=bitmap bench/incremental.sh build
set -euo pipefail
build=${1:-build}
vmsnap=$(realpath "$build/tools/vmsnap")
guest=$(realpath "$build/tests/dirty/bench_dirty.elf")
mode=${DIRTY_TRACKING:-ring}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

t0=$(date +%s.%N)
"$vmsnap" run "$guest" --mem 1G --dirty-tracking "$mode" --snapshot-on-doorbell 'inc-{n}.vmsnap' --incremental \
  --serial /dev/null
t1=$(date +%s.%N)
"$vmsnap" run "$guest" --mem 1G --dirty-tracking off --snapshot-on-doorbell 'full-{n}.vmsnap' --serial /dev/null

field() {  # field FILE KEY: memory.KEY from inspect --json
  "$vmsnap" inspect --json "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['memory']['$2'])"
}
echo "guest RAM 1 GiB, dirty tracking: $mode, incremental run took $(echo "$t1 - $t0" | bc) s"
printf '%-10s %14s %16s %18s %16s\n' dirtied pages_stored incremental_bytes incremental_MiB full_bytes
labels=("" "base" "1%" "10%" "50%")
for n in 1 2 3 4; do
  inc=$(stat -c %s "inc-$n.vmsnap")
  full=$(stat -c %s "full-$n.vmsnap")
  pages=$(field "inc-$n.vmsnap" present_pages)
  printf '%-10s %14s %16s %18.2f %16s\n' "${labels[$n]}" "$pages" "$inc" "$(echo "$inc / 1048576" | bc -l)" "$full"
done
