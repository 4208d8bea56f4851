#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Peak RSS of `vmsnap export` on a large snapshot (issue 7: under 256 MiB for a
# 4 GiB snapshot). Builds the snapshot with the writer API, then exports it in
# each format under /usr/bin/time -v and prints one line per format.
#
#   bench/export_rss.sh [BUILD_DIR] [SIZE_MIB]     (defaults: build, 4096)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
mib=${2:-4096}
ninja -C "$build" vmsnap forensics_make_snapshot >/dev/null
vmsnap=$build/tools/vmsnap
work=$(mktemp -d "${TMPDIR:-/tmp}/vmsnap-export-rss-XXXXXX")
trap 'rm -rf "$work"' EXIT

start=$(date +%s.%N)
"$build/tests/forensics/forensics_make_snapshot" "$work/big.vmsnap" "$mib"
end=$(date +%s.%N)
printf 'snapshot: %d MiB of guest memory, %s bytes on disk, written in %.1f s\n' \
  "$mib" "$(stat -c %s "$work/big.vmsnap")" "$(echo "$end - $start" | bc)"

printf '%-6s %14s %10s %12s\n' format peak_rss_mib wall_s out_alloc_mib
for fmt in elf raw lime; do
  /usr/bin/time -v -o "$work/time.txt" "$vmsnap" export "$work/big.vmsnap" --format "$fmt" -o "$work/out.$fmt"
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$work/time.txt")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$work/time.txt")
  alloc=$(( $(stat -c '%b * %B' "$work/out.$fmt") / 1048576 ))
  printf '%-6s %14d %10s %12d\n' "$fmt" $((rss_kb / 1024)) "$wall" "$alloc"
  rm -f "$work/out.$fmt"
done
