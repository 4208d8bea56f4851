#!/bin/bash
# SPDX-License-Identifier: MIT
# Runs arch_api_test, then checks each value it read from a golden file
# through the C API against what `vmsnap inspect --json` prints for it.
#   arch_api_test.sh TEST_BINARY VMSNAP_BINARY GOLDEN_DIR WORK_DIR
set -euo pipefail
test_bin=$1 vmsnap=$2 golden=$3 work=$4
rm -rf "$work"
mkdir -p "$work"
"$test_bin" "$vmsnap" "$golden" "$work" >"$work/values"
for f in s390x ppc64 aarch64; do
  "$vmsnap" inspect --json "$golden/$f.vmsnap" >"$work/$f.json"
done
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
docs, bad, seen = {}, 0, 0
for line in open(f"{work}/values"):
    name, path, got = line.split()
    if name not in docs:
        docs[name] = json.load(open(f"{work}/{name.split('.')[0]}.json"))
    node, byte, length = docs[name], None, False
    if "@" in path:
        path, byte = path.split("@")
    if path.endswith("#"):
        path, length = path[:-1], True
    for part in path.split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    if length:
        want = len(node)
    elif byte is not None:
        want = bytes.fromhex(node)[int(byte)]
    else:
        want = int(node, 0) if isinstance(node, str) else int(node)
    seen += 1
    if want != int(got):
        print(f"{name} {path}: the C API says {int(got):#x}, inspect --json {want:#x}")
        bad += 1
if seen < 40:
    print(f"only {seen} values compared")
    bad += 1
sys.exit(1 if bad else 0)
PY
