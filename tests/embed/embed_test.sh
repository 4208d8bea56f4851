#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The embedding tests: install vmsnap to a temporary prefix, then use only
# what is installed there, as another project would.
#   embed_test.sh STEP BUILD_DIR WORK_DIR GUEST_DIR
# STEP: install | header | soname | cmake-vmm | pkgconfig-vmm | python | capnp
set -euo pipefail
step=$1 build=$2 work=$3 guests=$4
here=$(cd "$(dirname "$0")" && pwd)
prefix=$work/prefix
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
vmsnap=$prefix/bin/vmsnap
fail() { echo "FAIL: $*" >&2; exit 1; }

# Runs `$@`, expecting exit status $1; stdout to $2.
expect() {
  local want=$1 out=$2; shift 2
  local rc=0
  "$@" >"$out" || rc=$?
  [ "$rc" = "$want" ] || fail "$* exited $rc, expected $want"
}

# The guest's output continues exactly as an uninterrupted run's, whoever
# saved and whoever restored.
scenario() {
  local vmm=$1 dir=$2
  mkdir -p "$dir"
  expect 44 "$dir/full.out" "$vmm" boot "$guests/pit.elf"
  expect 0 "$dir/pre.out" "$vmm" boot "$guests/pit.elf" "$dir/s.vmsnap"
  grep -q DOORBELL "$dir/pre.out" || fail "no doorbell before the save"
  for mode in eager lazy; do
    expect 44 "$dir/$mode.out" "$vmm" restore "$dir/s.vmsnap" "$mode"
    cat "$dir/pre.out" "$dir/$mode.out" | cmp - "$dir/full.out" || fail "$mode restore: output differs"
  done
  # vmsnap's own tools accept the file the C API wrote.
  "$vmsnap" verify "$dir/s.vmsnap" >/dev/null || fail "vmsnap verify"
  # (to a file: grep -q would close the pipe early and pipefail see SIGPIPE)
  "$vmsnap" inspect --json "$dir/s.vmsnap" >"$dir/inspect.json" || fail "vmsnap inspect"
  grep -q '"mini_vmm 1"' "$dir/inspect.json" || fail "vmsnap inspect: creator missing"
  "$vmsnap" diff "$dir/s.vmsnap" "$dir/s.vmsnap" >/dev/null || fail "vmsnap diff of a file with itself"
  expect 44 "$dir/load.out" "$vmsnap" load "$dir/s.vmsnap" --serial -
  cat "$dir/pre.out" "$dir/load.out" | cmp - "$dir/full.out" || fail "vmsnap load: output differs"
  # And the C VMM resumes what `vmsnap run` wrote.
  expect 44 "$dir/run.out" "$vmsnap" run "$guests/pit.elf" --snapshot-on-doorbell "$dir/v.vmsnap"
  cmp "$dir/run.out" "$dir/full.out" || fail "vmsnap run and mini_vmm print differently"
  expect 44 "$dir/v.out" "$vmm" restore "$dir/v.vmsnap" eager
  cat "$dir/pre.out" "$dir/v.out" | cmp - "$dir/full.out" || fail "restore of vmsnap run's snapshot: output differs"
  echo "scenario passed with $vmm"
}

case $step in
  install)
    rm -rf "$work"
    cmake --install "$build" --prefix "$prefix" >/dev/null
    for f in bin/vmsnap lib/libvmsnap.so.0 lib/libvmsnap.a include/vmsnap/vmsnap.h \
             lib/cmake/vmsnap/vmsnapConfig.cmake lib/cmake/vmsnap/vmsnapConfigVersion.cmake \
             lib/pkgconfig/vmsnap.pc share/vmsnap/schemas/manifest.capnp share/man/man1/vmsnap.1 \
             share/man/man1/vmsnap-load.1 share/bash-completion/completions/vmsnap; do
      [ -e "$prefix/$f" ] || fail "not installed: $f"
    done
    ;;
  header)
    cc -std=c99 -Wall -Werror -o "$work/header_only" "$here/header_only.c" $(pkg-config --cflags --libs vmsnap)
    LD_LIBRARY_PATH=$prefix/lib "$work/header_only"
    ;;
  soname)
    readelf -d "$prefix/lib/libvmsnap.so" >"$work/dynamic"
    grep -q "SONAME.*\[libvmsnap\.so\.0\]" "$work/dynamic" || fail "no SONAME libvmsnap.so.0"
    ;;
  cmake-vmm)
    cmake -S "$here/project" -B "$work/cmake" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
    cmake --build "$work/cmake" >/dev/null
    scenario "$work/cmake/mini_vmm" "$work/cmake-run"
    ;;
  pkgconfig-vmm)
    mkdir -p "$work/pc"
    cc -std=c99 -Wall -Werror -o "$work/pc/mini_vmm" "$here/mini_vmm.c" $(pkg-config --cflags --libs vmsnap) \
       -Wl,-rpath,"$prefix/lib"
    scenario "$work/pc/mini_vmm" "$work/pc-run"
    ;;
  python)
    mkdir -p "$work/py"
    expect 42 /dev/null "$vmsnap" run "$guests/regs.elf" --snapshot-on-doorbell "$work/py/regs.vmsnap" --serial "$work/py/serial"
    python3 "$here/regs.py" "$prefix/lib/libvmsnap.so.0" "$work/py/regs.vmsnap" 0x100000 >"$work/py/out"
    cat "$work/py/out"
    grep -q '^rbx 0x1111111111111111$' "$work/py/out" || fail "rbx not read through ctypes"
    # regs.bin is the same guest flattened: its first bytes load at 0x100000.
    want=$(od -An -tx1 -N16 "$guests/regs.bin" | tr -d ' \n')
    grep -q "^memory 0x100000 $want\$" "$work/py/out" || fail "guest memory at 0x100000 is not the image's first bytes ($want)"
    ;;
  capnp)
    mkdir -p "$work/capnp"
    expect 42 /dev/null "$vmsnap" run "$guests/regs.elf" --snapshot-on-doorbell "$work/capnp/s.vmsnap" --serial "$work/capnp/serial"
    # docs/format.md: the footer's first 16 bytes give the manifest's offset and length.
    python3 - "$work/capnp/s.vmsnap" "$work/capnp/manifest.bin" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
off, length = struct.unpack_from("<QQ", data, len(data) - 64)
open(sys.argv[2], "wb").write(data[off:off + length])
PY
    capnp decode "$prefix/share/vmsnap/schemas/manifest.capnp" Manifest <"$work/capnp/manifest.bin" >"$work/capnp/out"
    grep -q 'arch = x8664' "$work/capnp/out" || fail "capnp decode: no arch"
    grep -q 'rbx = 1229782938247303441' "$work/capnp/out" || fail "capnp decode: no rbx"
    ;;
  *) fail "unknown step $step" ;;
esac
