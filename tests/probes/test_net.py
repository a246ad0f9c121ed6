"""net family against a real tap in a netns this test creates, in both variants: ``counters`` (the taps' own
counters + a raw tracepoint on kfree_skb with BTF offsets: what runs here by default) and ``tracepoints``
(net tracepoints on every packet: the fallback without BTF). Truths: frames this test wrote or sent, and
the tap's counters read through sysfs inside the netns."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.probes.conftest import fresh_maps
from tests.probes.helpers import NetnsTap, eth_frame, netns_tap
from vhtune.probes import ProbeConfig, ProbeMaps, Probes, TapTarget, TargetSet, load
from vhtune.probes.layouts import tap_dir_index
from vhtune.probes.reasons import reason_name

pytestmark = pytest.mark.root

ETH_HLEN = 14  # netif_receive_skb's len is after eth_type_trans pulled the header; the device counts it


@pytest.fixture(scope="module", params=["counters", "tracepoints"])
def net_probes(request: pytest.FixtureRequest, require_root: None) -> Iterator[Probes]:
    p = load(ProbeConfig(families=("net",), net_variant=request.param))
    try:
        assert p.variants["net"].startswith(request.param), p.variants
        yield p
    finally:
        p.close()


@pytest.fixture
def maps(net_probes: Probes) -> Iterator[ProbeMaps]:
    with fresh_maps(net_probes) as m:
        yield m


def _counters(maps: ProbeMaps) -> bool:
    return bool(maps.p.config.net_offsets)


# Sends N UDP datagrams from inside the netns to a neighbour on the tap (static ARP entry, so every
# datagram becomes one frame on the tap; nothing leaves the namespace).
UDP_SENDER = """
import socket, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(n):
    s.sendto(bytes(size), ("10.213.0.2", 9))
"""


def _watch(maps: ProbeMaps, tap: NetnsTap) -> None:
    ts = TargetSet()
    ts.add_tap(TapTarget(tap.name, None, tap.ns))
    maps.apply(ts)


def _send_udp(tap: NetnsTap, n: int, size: int = 200) -> None:
    subprocess.run(
        ["ip", "-n", tap.ns, "neigh", "replace", "10.213.0.2", "lladdr", "02:00:00:00:00:02", "dev", tap.name],
        check=True,
        timeout=20,
    )
    subprocess.run(tap.exec_argv([sys.executable, "-c", UDP_SENDER, str(n), str(size)]), check=True, timeout=60)


def test_rx_packets_and_bytes_match_the_tap_counters(maps: ProbeMaps) -> None:
    with netns_tap() as tap:
        _watch(maps, tap)
        maps.read()
        before = tap.stats()
        frame = eth_frame(100)
        for _ in range(3000):
            os.write(tap.fd, frame)
        time.sleep(0.2)  # netif_rx backlog is processed in softirq, right after the writes
        d = maps.read()
        after = tap.stats()
    got = d.taps[tap.key]
    k_pkts = after["rx_packets"] - before["rx_packets"]
    k_bytes = after["rx_bytes"] - before["rx_bytes"]
    assert (k_pkts, k_bytes) == (3000, 300_000)
    assert got["rx_packets"] == 3000
    assert got["rx_bytes"] == (300_000 if _counters(maps) else 300_000 - ETH_HLEN * 3000)
    # Each frame has an ethertype nobody handles: the stack drops it, charged to the tap, direction rx.
    rx_drops = sum(x["count"] for x in d.drops if x["ifname"] == tap.name and x["direction"] == "rx")
    assert rx_drops == 3000


def test_tx_packets_match_the_tap_counters(maps: ProbeMaps) -> None:
    # The ring (txqueuelen) holds all 2000 frames until we drain them: no drops in this test.
    with netns_tap(txqueuelen=4096) as tap:
        _watch(maps, tap)
        _send_udp(tap, 10)  # warm-up: neighbour entry in place, stray first packets out of the way
        tap.drain()
        maps.read()
        before = tap.stats()
        _send_udp(tap, 2000)
        read = tap.drain()
        d = maps.read()
        after = tap.stats()
    got = d.taps[tap.key]
    k_pkts = after["tx_packets"] - before["tx_packets"]
    assert read == k_pkts == 2000
    assert got["tx_packets"] == pytest.approx(k_pkts, rel=0.05)
    assert got["tx_queued"] == pytest.approx(k_pkts, rel=0.05)
    assert got["tx_bytes"] == pytest.approx(after["tx_bytes"] - before["tx_bytes"], rel=0.05)
    assert not [x for x in d.drops if x["ifname"] == tap.name]


def test_full_tap_queue_drops_match_tx_dropped(maps: ProbeMaps) -> None:
    # txqueuelen 4 and nobody reading: tun_net_xmit finds its ring full and frees the skb (FULL_RING here;
    # the reason numbering is the running kernel's).
    with netns_tap(txqueuelen=4) as tap:
        _watch(maps, tap)
        maps.read()
        before = tap.stats()
        _send_udp(tap, 500)
        d = maps.read()
        after = tap.stats()
    k_dropped = after["tx_dropped"] - before["tx_dropped"]
    ours = [x for x in d.drops if x["ifname"] == tap.name and x["direction"] == "tx"]
    total = sum(x["count"] for x in ours)
    print({reason_name(x["reason"]): x["count"] for x in ours}, "kernel tx_dropped", k_dropped)
    assert k_dropped >= 400
    assert total == pytest.approx(k_dropped, rel=0.05)
    assert "FULL_RING" in {reason_name(x["reason"]) for x in ours}


def test_other_devices_are_not_counted(maps: ProbeMaps) -> None:
    with netns_tap() as tap, netns_tap() as other:
        _watch(maps, tap)
        maps.read()
        for _ in range(200):
            os.write(other.fd, eth_frame(100))
        time.sleep(0.1)
        d = maps.read()
    assert d.taps[tap.key]["rx_packets"] == 0
    assert other.key not in d.taps
    assert not d.drops, d.drops  # the other tap's 200 dropped frames are not charged to anyone we watch


def _colliding_names() -> tuple[str, str]:
    """Two tap names of different lengths (8 and 15 bytes: both mask branches) with the same tap_dir index."""
    seen: dict[int, str] = {}
    for i in range(100_000):
        for name in (f"vc{os.getpid() % 10000:04d}{i:02d}"[:8], f"vhrcol{os.getpid()}x{i}".ljust(15, "z")[:15]):
            idx = tap_dir_index(name)
            if idx in seen and len(seen[idx]) != len(name):
                return seen[idx], name
            seen.setdefault(idx, name)
    raise AssertionError("no colliding pair found")


def test_taps_sharing_a_direct_entry_are_told_apart(maps: ProbeMaps) -> None:
    """Two watched names in one tap_dir entry: the probe falls back to the `taps` hash and still counts
    each tap exactly; letting one go gives the other the entry back."""
    a_name, b_name = _colliding_names()
    with netns_tap(name=a_name, addr=None) as a, netns_tap(name=b_name, addr=None) as b:
        ts = TargetSet()
        ts.add_tap(TapTarget(a.name, None, a.ns))
        ts.add_tap(TapTarget(b.name, None, b.ns))
        maps.apply(ts)
        maps.read()
        for tap, n in ((a, 300), (b, 200)):
            for _ in range(n):
                os.write(tap.fd, eth_frame(100))
        time.sleep(0.2)
        d = maps.read()
        assert (d.taps[a.key]["rx_packets"], d.taps[b.key]["rx_packets"]) == (300, 200)
        # The drops are attributed through the shared entry too (the counters variant names taps only there).
        per_tap = {n: sum(x["count"] for x in d.drops if x["ifname"] == n) for n in (a.name, b.name)}
        assert per_tap == {a.name: 300, b.name: 200}
        ts2 = TargetSet()
        ts2.add_tap(TapTarget(b.name, None, b.ns))
        maps.apply(ts2)
        for tap in (a, b):
            for _ in range(50):
                os.write(tap.fd, eth_frame(100))
        time.sleep(0.2)
        d = maps.read()
    assert d.taps == {b.key: d.taps[b.key]} and d.taps[b.key]["rx_packets"] == 50
    assert {x["ifname"] for x in d.drops} <= {b.name} and sum(x["count"] for x in d.drops) == 50


def test_same_named_taps_in_two_netns_are_two_targets(maps: ProbeMaps) -> None:
    """One netns per VM (Kata): a tap of one name in each. Frames written into one only (the stack drops them:
    a drop per frame). The counters variant keeps two rows, the packets and drops on the right netns only;
    the tracepoint variant, which sees names only, watches one of them and says so instead of merging."""
    name = f"vhrsame{os.getpid()}"[:15]
    with netns_tap(name=name, addr=None) as a, netns_tap(name=name, addr=None) as b:
        ts = TargetSet()
        ts.add_tap(TapTarget(a.name, None, a.ns))
        ts.add_tap(TapTarget(b.name, None, b.ns))
        assert len(ts.taps) == 2
        ch = maps.apply(ts)
        maps.read()
        for _ in range(300):
            os.write(a.fd, eth_frame(100))
        time.sleep(0.2)
        d = maps.read()
        truth = a.stats()["rx_packets"], b.stats()["rx_packets"]
    assert truth == (300, 0)
    if _counters(maps):
        assert not ch.skipped and not maps.tap_warnings
        assert set(d.taps) == {a.key, b.key}
        assert (d.taps[a.key]["rx_packets"], d.taps[b.key]["rx_packets"]) == (300, 0)
        per_ns = {ns: sum(x["count"] for x in d.drops if x["netns"] == ns) for ns in (a.ns, b.ns)}
        assert per_ns == {a.ns: 300, b.ns: 0}
        assert {x["ifname"] for x in d.drops} == {name}
    else:
        assert len(d.taps) == 1 and len(ch.skipped) == 1 and "by name only" in ch.skipped[0]
        (warning,) = maps.tap_warnings
        assert name in warning and a.ns in warning and b.ns in warning and "by name only" in warning
