"""The tap port against the real kernel: a multiqueue tap created inside a test-owned netns."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backend.conftest import start_backend, thread_cpu_ticks, thread_stat, wait_for
from vhtune.backend import net
from vhtune.backend.ports import Tap, parse_port
from vhtune.errors import UsageError


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=check)


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"vhb{os.getpid()}"
    ip("netns", "add", name)
    try:
        yield name
    finally:
        ip("netns", "del", name, check=False)


def link_stats(ns: str, dev: str) -> dict[str, int]:
    out = json.loads(ip("-n", ns, "-s", "-j", "link", "show", "dev", dev).stdout)
    return dict(out[0]["stats64"]["rx"]) | {f"tx_{k}": v for k, v in out[0]["stats64"]["tx"].items()}


def test_parse_port() -> None:
    assert parse_port("tap:t0@ns1").netns == "ns1"
    assert parse_port("gen:128").size == 128
    for bad in ("tap:", "tap:" + "x" * 16, "gen:10", "gen:x", "foo"):
        with pytest.raises(UsageError):
            parse_port(bad)
    with pytest.raises(UsageError, match="does not exist"):
        Tap("vhbnone0", "vhb-no-such-ns", 1)


def test_tap_in_netns_both_directions(short_tmp: Path, netns: str) -> None:
    tap = f"vhbt{os.getpid()}"[:15]
    with start_backend(short_tmp, f"tap:{tap}@{netns}", queue_pairs=2) as r:
        # The tap exists only inside the netns, with one queue per queue pair.
        assert ip("link", "show", "dev", tap, check=False).returncode != 0
        queues = ip("netns", "exec", netns, "ls", f"/sys/class/net/{tap}/queues").stdout.split()
        assert sorted(queues) == ["rx-0", "rx-1", "tx-0", "tx-1"]
        with r.frontend(queues=range(4)) as fe:
            fe.post_rx(0, 64)
            fe.post_rx(2, 64)
            before = link_stats(netns, tap)
            fe.tx(1, [net.make_frame(100, k) for k in range(20)])
            fe.tx(3, [net.make_frame(100, k) for k in range(10)])
            assert len(fe.wait_used(1, 20)) == 20 and len(fe.wait_used(3, 10)) == 10
            wait_for(lambda: link_stats(netns, tap)["packets"] - before["packets"] >= 30)
            assert link_stats(netns, tap)["packets"] - before["packets"] == 30
            # Kernel → guest: ARP requests for a neighbour leave through the tap into the RX rings.
            ip("-n", netns, "addr", "add", "10.199.0.1/24", "dev", tap)
            # One UDP datagram to a neighbour inside the netns: the kernel first ARPs for it.
            send = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('10.199.0.2', 9))"
            subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", send], timeout=10, check=True)
            frames: list[bytes] = []

            def arp_arrived() -> bool:
                for q in (0, 2):
                    frames.extend(_frame(fe, q, head, ln) for head, ln in fe.used(q))
                return any(f[12:14] == b"\x08\x06" for f in frames)

            wait_for(arp_arrived, 3)
            # IPv6 autoconf frames may come first; an ARP request for 10.199.0.2 must arrive.
            assert any(f[12:14] == b"\x08\x06" and f[38:42] == bytes([10, 199, 0, 2]) for f in frames), frames
            assert r.queue_stats(1)["packets"] == 20 and r.queue_stats(3)["packets"] == 10
    # The daemon created the tap; closing its queue fds removed it.
    assert tap not in ip("-n", netns, "link", "show").stdout


def _frame(fe, q: int, head: int, ln: int) -> bytes:  # type: ignore[no-untyped-def]
    """The frame (after the 12-byte header) the back-end wrote into RX buffer ``head`` of queue q."""
    d, _, _ = fe.ring_addrs(q, fe.num[q])
    addr, _dlen, _fl, _nx = struct.unpack_from("<QIHH", fe.mm, d + 16 * head)
    return bytes(fe.read(addr, ln))[12:]


@pytest.mark.parametrize("policy", ["wait", "drop"])
def test_rx_refill_policy_with_an_empty_guest_ring(short_tmp: Path, netns: str, policy: str) -> None:
    """No RX buffers: `wait` leaves frames in the tap queue (the kernel drops beyond it) and the worker
    sleeps; `drop` reads them and counts no_rx_buffer."""
    tap = f"vhbr{os.getpid()}"[:15]
    with start_backend(short_tmp, f"tap:{tap}@{netns}", rx_refill=policy) as r, r.frontend() as fe:
        ip("-n", netns, "addr", "add", "10.199.1.1/24", "dev", tap)
        send = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            "for _ in range(50): s.sendto(b'x' * 100, ('10.199.1.255', 9))\n"
        )
        subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", send], timeout=10, check=True)
        time.sleep(0.3)
        drops = r.queue_stats(0)["drops"].get("no_rx_buffer", 0)
        if policy == "drop":
            assert drops >= 50
        else:
            assert drops == 0
            tid = r.control.queues()[0]["tid"]
            assert thread_stat(tid)[0] == "S"  # asleep on the kick eventfd, not spinning on a readable tap
            # A refill then delivers what waited in the tap queue.
            fe.post_rx(0, 64)
            assert len(fe.wait_used(0, 50, timeout=3)) >= 50


def test_tap_deleted_under_the_backend(short_tmp: Path, netns: str) -> None:
    """Someone deletes the tap: TX counts tap_error drops, the RX worker stops instead of spinning on
    POLLERR, and the daemon keeps serving."""
    tap = f"vhbd{os.getpid()}"[:15]
    with start_backend(short_tmp, f"tap:{tap}@{netns}") as r, r.frontend() as fe:
        fe.post_rx(0, 16)
        fe.sync()
        ip("-n", netns, "link", "del", tap)
        fe.tx(1, [net.make_frame(64)] * 5)
        assert len(fe.wait_used(1, 5)) == 5  # buffers still come back
        wait_for(lambda: r.queue_stats(1)["drops"].get("tap_error", 0) >= 5)
        q1 = r.queue_stats(1)
        assert q1["drops"].get("tap_error", 0) == 5 and q1["packets"] == 0
        tid = r.control.queues()[0]["tid"]
        time.sleep(0.3)
        c0 = thread_cpu_ticks(tid)
        time.sleep(0.5)
        assert thread_cpu_ticks(tid) - c0 <= 2  # ticks: asleep, not spinning


def test_attach_to_an_existing_persistent_tap(short_tmp: Path, netns: str) -> None:
    tap = f"vhba{os.getpid()}"[:15]
    ip("-n", netns, "tuntap", "add", "dev", tap, "mode", "tap", "multi_queue", "vnet_hdr")
    with start_backend(short_tmp, f"tap:{tap}@{netns}") as r, r.frontend() as fe:
        before = link_stats(netns, tap)["packets"]
        fe.tx(1, [net.make_frame(80)] * 6)
        assert len(fe.wait_used(1, 6)) == 6
        wait_for(lambda: link_stats(netns, tap)["packets"] - before >= 6)
        assert link_stats(netns, tap)["packets"] - before == 6
    # Attached, not created: the persistent tap outlives the back-end.
    assert tap in ip("-n", netns, "link", "show").stdout
