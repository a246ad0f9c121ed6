"""Real things for the probe tests: processes we start, taps in netns we create — all cleaned up by us.

Names start with ``vhr`` (this area) and carry the test process's pid so parallel runs do not collide.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Child

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
_seq = iter(range(100))


def unique(kind: str) -> str:
    """``vhr<kind><pid>n<k>``: ≤ 15 characters for interface names."""
    return f"vhr{kind}{os.getpid()}n{next(_seq)}"[:15]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


@dataclass
class NetnsTap:
    ns: str
    name: str
    fd: int

    @property
    def key(self) -> tuple[str, str]:
        """How the recorder keys it: (netns, name)."""
        return (self.ns, self.name)

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def stats(self) -> dict[str, int]:
        base = ["cat"] + [
            f"/sys/class/net/{self.name}/statistics/{k}"
            for k in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_dropped", "rx_dropped")
        ]
        out = subprocess.run(self.exec_argv(base), capture_output=True, text=True, check=True, timeout=20)
        vals = [int(v) for v in out.stdout.split()]
        return dict(
            zip(("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_dropped", "rx_dropped"), vals, strict=True)
        )

    def drain(self) -> int:
        """Read every frame waiting on the tap fd (non-blocking); returns how many."""
        n = 0
        while True:
            try:
                os.read(self.fd, 65536)
            except BlockingIOError:
                return n
            n += 1


@contextlib.contextmanager
def netns_tap(
    txqueuelen: int = 1000, addr: str | None = "10.213.0.1/24", name: str | None = None
) -> Iterator[NetnsTap]:
    """A tap opened by this process and moved into a netns this test creates; IPv6 off (no chatter)."""
    ns = unique("ns")
    name = name or unique("t")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    created_ns = False
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
        ip("netns", "add", ns)
        created_ns = True
        ip("link", "set", "dev", name, "netns", ns)
        ip("-n", ns, "link", "set", "dev", name, "txqueuelen", str(txqueuelen))
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1"],
            check=True,
            capture_output=True,
            timeout=20,
        )
        if addr:
            ip("-n", ns, "addr", "add", addr, "dev", name)
        ip("-n", ns, "link", "set", "dev", name, "up")
        yield NetnsTap(ns, name, fd)
    finally:
        os.close(fd)  # the tap (not persistent) disappears with its last fd
        if created_ns:
            ip("netns", "del", ns, check=False)


def eth_frame(size: int = 100) -> bytes:
    """A broadcast Ethernet frame with a local-experimental ethertype (0x88b5): the stack drops it quietly."""
    dst = b"\xff" * 6
    src = b"\x02\x00\x00\x00\x00\x01"
    return dst + src + b"\x88\xb5" + bytes(size - 14)


@contextlib.contextmanager
def spawned(code: str, *, cpu: int | None = None, rr: bool = False) -> Iterator[subprocess.Popen[str]]:
    """A Python child running ``code`` (which must stop by itself); killed and reaped on the way out.
    ``rr``: SCHED_RR priority 1, so other CFS load on the machine cannot get between it and its CPU."""
    argv = [sys.executable, "-c", code]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    if rr:
        argv = ["chrt", "-r", "1", *argv]
    with Child(argv, stdout=subprocess.PIPE) as proc:
        yield proc


def schedstat(pid: int, tid: int | None = None) -> tuple[int, int]:
    """(ns on CPU, ns waiting on a run queue) from /proc/PID[/task/TID]/schedstat (kernel's own counters)."""
    path = Path(f"/proc/{pid}/task/{tid}/schedstat") if tid else Path(f"/proc/{pid}/schedstat")
    run, wait, _ = path.read_text().split()
    return int(run), int(wait)
