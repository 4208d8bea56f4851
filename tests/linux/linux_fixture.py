#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The Linux guest fixture: Debian's cloud kernel and busybox-static (fetched
# once into a cache), an initramfs whose /init runs a known workload, booted
# under QEMU TCG and stopped at a known point; QEMU's own dump-guest-memory ELF
# and two migration streams a second apart are what the Linux tests examine.
import argparse
import glob
import os
import re
import shutil
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "qemu"))
from qmp import QEMU, Qmp, kill  # noqa: E402

SKIP = 77
META = "linux-image-cloud-amd64"

# What the workload leaves in the guest, checked by the tests.
TMPFS_FILE = "/mnt/vmsnap/known.txt"
TMPFS_LINE = "vmsnap-linux-fixture: the known contents of a tmpfs file\n"
KMSG_LINES = ["vmsnap-fixture: workload started", "vmsnap-fixture: tmpfs file written"]
COUNTER_PREFIX = "vmsnap-counter="
READY = "VMSNAP-READY"

# TCG on a busy host reads the PIT too slowly for the kernel to calibrate the
# TSC against it, and the boot then stalls with no timer ticks: the TSC rate
# and the delay loop are given instead of measured.
APPEND = "console=ttyS0 quiet panic=-1 tsc_early_khz=2000000 lpj=4000000 no_timer_check"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# QEMU's vmcoreinfo device is reached through fw_cfg; with the driver loaded
# the kernel hands it the address of its VMCOREINFO note.
insmod /qemu_fw_cfg.ko 2>/dev/null
mkdir -p /mnt/vmsnap
mount -t tmpfs -o size=64m tmpfs /mnt/vmsnap
echo "@KMSG0@" > /dev/kmsg
i=0
while [ $i -lt 73 ]; do printf '@LINE@' >> @FILE@; i=$((i+1)); done
echo "@KMSG1@" > /dev/kmsg
# Page cache and tmpfs pages with contents: the benchmark's real memory.
dd if=/dev/urandom of=/mnt/vmsnap/random.bin bs=64k count=320 2>/dev/null
cat /bin/busybox /qemu_fw_cfg.ko > /mnt/vmsnap/copy.bin
sleep 31536001 &
/bin/vmsnap-counter 7 &
echo "@READY@ $(cat /proc/sys/kernel/osrelease)" > /dev/ttyS0
exec sleep 31536000
"""

COUNTER = r"""#!/bin/busybox sh
# A process with a distinctive command line that keeps changing one tmpfs page.
n=0
while true; do
  echo "@PREFIX@$n" > /mnt/vmsnap/counter
  n=$((n+$1))
  usleep 20000
done
"""


def log(msg):
    print(msg, flush=True)


def cache_dir():
    return os.environ.get("VMSNAP_LINUX_CACHE", "/var/cache/vmsnap-linux")


def cached(cache):
    """{'vmlinuz','vmlinux','busybox','fw_cfg','version'} when the cache is
    complete, else None."""
    try:
        version = open(os.path.join(cache, "version")).read().strip()
    except OSError:
        return None
    files = {k: os.path.join(cache, k) for k in ("vmlinuz", "vmlinux", "busybox", "qemu_fw_cfg.ko")}
    if not all(os.path.exists(p) for p in files.values()):
        return None
    files["version"] = version
    return files


def fetch(cache):
    """Downloads the packages with apt-get download (Debian's own) and keeps
    only what the fixture uses; the 283 MB debug package is dropped once its
    vmlinux is out."""
    have = cached(cache)
    if have:
        return have
    os.makedirs(cache, exist_ok=True)
    dep = subprocess.run(["apt-cache", "depends", META], capture_output=True, text=True)
    m = re.search(r"Depends: (linux-image-(\S+)-cloud-amd64)\b", dep.stdout)
    if not m:
        raise FileNotFoundError(f"apt-cache does not know {META}")
    kpkg, version = m.group(1), m.group(2)
    dl = os.path.join(cache, "dl")
    os.makedirs(dl, exist_ok=True)
    want = [kpkg, "busybox-static", f"{kpkg}-dbg"]
    missing = [p for p in want if not glob.glob(os.path.join(dl, p + "_*.deb"))]
    if missing:
        log(f"downloading {' '.join(missing)} into {dl}")
        p = subprocess.run(["apt-get", "download", *missing], cwd=dl, capture_output=True, text=True)
        if p.returncode != 0:
            raise FileNotFoundError(f"apt-get download failed: {p.stderr.strip()[-300:]}")
    x = os.path.join(cache, "x")
    shutil.rmtree(x, ignore_errors=True)
    os.makedirs(x)
    for p in (kpkg, "busybox-static"):
        subprocess.run(["dpkg-deb", "-x", glob.glob(os.path.join(dl, p + "_*.deb"))[0], x], check=True)
    shutil.copy(glob.glob(os.path.join(x, "boot", "vmlinuz-*"))[0], os.path.join(cache, "vmlinuz"))
    shutil.copy(os.path.join(x, "bin", "busybox"), os.path.join(cache, "busybox"))
    shutil.copy(glob.glob(os.path.join(x, "lib/modules/*/kernel/drivers/firmware/qemu_fw_cfg.ko"))[0],
                os.path.join(cache, "qemu_fw_cfg.ko"))
    shutil.rmtree(x)
    dbg = glob.glob(os.path.join(dl, f"{kpkg}-dbg_*.deb"))[0]
    tmp = os.path.join(cache, "vmlinux.part")
    with open(tmp, "wb") as out:
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", dbg], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-O", "--wildcards", "./usr/lib/debug/boot/vmlinux-*"],
                       stdin=tar.stdout, stdout=out, check=True)
        if tar.wait() != 0:
            raise RuntimeError(f"dpkg-deb could not read {dbg}")
    os.rename(tmp, os.path.join(cache, "vmlinux"))
    shutil.rmtree(dl)
    with open(os.path.join(cache, "version"), "w") as f:
        f.write(version + "\n")
    return cached(cache)


def cpio_newc(entries):
    """An initramfs archive (cpio "newc") of (name, mode, data) entries."""
    out = bytearray()

    def add(name, mode, data, ino):
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.extend(nb)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data) in enumerate(entries, 1):
        add(name, mode, data, ino)
    add("TRAILER!!!", 0, b"", 0)
    return bytes(out)


def build_initramfs(files, path):
    init = (INIT.replace("@KMSG0@", KMSG_LINES[0]).replace("@KMSG1@", KMSG_LINES[1])
            .replace("@LINE@", TMPFS_LINE.replace("\n", "\\n")).replace("@FILE@", TMPFS_FILE)
            .replace("@READY@", READY))
    counter = COUNTER.replace("@PREFIX@", COUNTER_PREFIX)
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    entries = [(n, d, b"") for n in ("bin", "dev", "proc", "sys", "mnt", "tmp", "sbin", "usr",
                                     "usr/bin", "usr/sbin")]
    entries += [("init", x, init.encode()), ("bin/vmsnap-counter", x, counter.encode()),
                ("bin/busybox", x, open(files["busybox"], "rb").read()),
                ("qemu_fw_cfg.ko", f, open(files["qemu_fw_cfg.ko"], "rb").read())]
    with open(path, "wb") as out:
        out.write(cpio_newc(entries))


def qemu_argv(files, initrd, cpu):
    return [QEMU, "-M", "microvm", "-accel", "tcg", "-cpu", cpu, "-m", "256", "-nodefaults",
            "-display", "none", "-no-reboot", "-device", "vmcoreinfo",
            "-kernel", files["vmlinuz"], "-initrd", initrd,
            "-append", APPEND]


def boot_and_capture(files, out, cpu):
    """Boots, waits for the workload's ready line, then writes: qemu.elf (QEMU's
    dump-guest-memory), a.stream, and b.stream a second of guest run later."""
    initrd = os.path.join(out, "initramfs.cpio")
    build_initramfs(files, initrd)
    serial = os.path.join(out, "serial.txt")
    sock = os.path.join(out, "qmp.sock")
    for p in (serial, sock):
        if os.path.exists(p):
            os.unlink(p)
    argv = qemu_argv(files, initrd, cpu) + ["-serial", f"file:{serial}",
                                            "-qmp", f"unix:{sock},server=on,wait=off"]
    with open(os.path.join(out, "qemu-command.txt"), "w") as f:
        f.write(" ".join(argv) + "\n")
    t0 = time.monotonic()
    vm = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        q = Qmp(sock)
        while READY not in open(serial, "rb").read().decode("latin-1"):
            if vm.poll() is not None:
                raise RuntimeError(f"QEMU exited: {vm.stderr.read().decode()[-400:]}")
            if time.monotonic() - t0 > 120:
                raise RuntimeError("the guest never printed " + READY)
            time.sleep(0.05)
        boot = time.monotonic() - t0
        with open(os.path.join(out, "boot-seconds.txt"), "w") as f:
            f.write(f"{boot:.1f}\n")
        # Let the counter run a little so its page is settled, then stop.
        time.sleep(0.3)
        q.cmd("stop")
        regs = q.hmp("info registers -a")
        with open(os.path.join(out, "qemu-registers.txt"), "w") as f:
            f.write(regs)
        for p in ("qemu.elf", "a.stream", "b.stream"):
            if os.path.exists(os.path.join(out, p)):
                os.unlink(os.path.join(out, p))
        q.cmd("dump-guest-memory", paging=False, protocol="file:" + os.path.join(out, "qemu.elf"))
        q.migrate_to_file(os.path.join(out, "a.stream"))
        q.cmd("cont")
        time.sleep(1.0)
        q.cmd("stop")
        q.cmd("migrate-set-capabilities", capabilities=[])
        q.migrate_to_file(os.path.join(out, "b.stream"))
        q.cmd("quit")
        vm.wait(timeout=30)
    finally:
        kill(vm)
    log(f"booted to {READY} in {boot:.1f} s (wall); wrote qemu.elf, a.stream, b.stream in {out}")
    with open(os.path.join(out, "fixture.txt"), "w") as f:
        f.write(f"vmlinux={files['vmlinux']}\nversion={files['version']}\ncpu={cpu}\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="directory for the fixture's outputs")
    ap.add_argument("--cpu", default="max")
    a = ap.parse_args()
    if shutil.which(QEMU) is None:
        log(f"{QEMU} missing: skipped")
        return SKIP
    os.makedirs(a.out, exist_ok=True)
    # What an earlier run left (the checks' imports and exports too), so no
    # check sees files of another boot; nothing else in the directory.
    for pat in ("*.stream", "*.vmsnap", "*.part", "*.elf", "*.raw", "*.lime", "*.txt", "initramfs.cpio",
                "qmp.sock", "crash-commands"):
        for p in glob.glob(os.path.join(a.out, pat)):
            os.unlink(p)
    try:
        t0 = time.monotonic()
        files = fetch(cache_dir())
        log(f"kernel {files['version']} from {cache_dir()} ({time.monotonic() - t0:.1f} s)")
    except (OSError, FileNotFoundError, subprocess.CalledProcessError) as e:
        log(f"the Linux packages are not available ({e}): skipped")
        return SKIP
    boot_and_capture(files, a.out, a.cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
