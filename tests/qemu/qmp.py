# SPDX-License-Identifier: MIT
# The QMP client and QEMU process helpers shared by the QEMU interop tests,
# the Linux guest tests and the benchmarks, so there is one copy to fix.
import json
import os
import socket
import time

QEMU = "qemu-system-x86_64"


class Qmp:
    """Just enough QMP: commands, replies (events skipped), fd passing and
    human monitor commands."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        end = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > end:
                    raise
                time.sleep(0.002)
        self.buf = b""
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, fds=None, **args):
        msg = json.dumps({"execute": name, "arguments": args}).encode() + b"\n"
        if fds:
            socket.send_fds(self.sock, [msg], fds)
        else:
            self.sock.sendall(msg)
        while True:
            r = self._read()
            if "event" in r:
                continue
            if "error" in r:
                raise RuntimeError(f"QMP {name}: {r['error']}")
            return r.get("return")

    def hmp(self, line):
        return self.cmd("human-monitor-command", **{"command-line": line})

    def wait_migration(self, what="migration", timeout=60):
        """Polls query-migrate every 5 ms until it completes."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.cmd("query-migrate").get("status")
            if st == "completed":
                return
            if st in ("failed", "cancelled"):
                raise RuntimeError(f"QEMU {what} {st}")
            time.sleep(0.005)
        raise RuntimeError(f"QEMU {what} did not complete")

    def migrate_to_file(self, path):
        """Migrates the (stopped) VM into `path` and waits for the end."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.cmd("getfd", fds=[fd], fdname="migout")
            self.cmd("migrate", uri="fd:migout")
            self.wait_migration()
        finally:
            os.close(fd)

    def close(self):
        self.sock.close()


def kill(proc):
    """Ends a QEMU we started (and reaps it)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
