#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Byte-order proof for the offline tools: `inspect --json` and `verify` on every
# golden file must print exactly the committed expected output (and exit with
# the committed status) on every host. CI runs this natively on x86_64 and
# under qemu-user in the s390x (big-endian) and ppc64le cross builds.
#   check_outputs.sh "<emulator prefix> VMSNAP" GOLDEN_DIR [--update]
set -u
vmsnap=$1   # may start with an emulator, e.g. "/usr/bin/qemu-s390x-static /path/vmsnap"
dir=$2
update=${3:-}
cd "$dir" || exit 2
mkdir -p expected
fail=0
for f in *.vmsnap; do
  for cmd in inspect verify; do
    args=("$cmd" "$f")
    [ "$cmd" = inspect ] && args+=(--json)
    out=$($vmsnap "${args[@]}" 2>&1)
    rc=$?
    got=$(printf 'exit %d\n%s\n' "$rc" "$out")
    want_file="expected/$f.$cmd"
    if [ "$update" = --update ]; then
      printf '%s\n' "$got" > "$want_file"
    elif [ "$got" != "$(cat "$want_file" 2>/dev/null)" ]; then
      echo "MISMATCH: vmsnap ${args[*]} differs from $want_file:"
      diff <(printf '%s\n' "$got") "$want_file" | head -20
      fail=1
    fi
  done
done
[ $fail = 0 ] && echo "golden outputs: all identical to tests/golden/expected/"
exit $fail
