"""netdev counters against real taps (in netns this test creates and in the root netns), checked with
independent truths: frames we write or read on the tap fd, and iproute2's view of the same counters."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.discover.conftest import UnnamedNetnsTap
from tests.probes.helpers import IFF_NO_PI, IFF_TAP, TUNSETIFF, NetnsTap, eth_frame, ip, netns_tap, unique
from vhtune.probes.netdev import CLONE_NEWNET, NetdevCounters, read_counters

pytestmark = pytest.mark.root

UDP_SENDER = """
import socket, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(n):
    s.sendto(bytes(size), ("10.213.0.2", 9))
"""


@pytest.fixture(autouse=True)
def _root(require_root: None) -> None:
    pass


def _one(tap: NetnsTap) -> NetdevCounters:
    return read_counters([(tap.ns, tap.name)])[(tap.ns, tap.name)]


def _send_udp(tap: NetnsTap, n: int, size: int = 200) -> None:
    # Static neighbour: every datagram becomes exactly one frame on the tap, no ARP.
    ip("-n", tap.ns, "neigh", "replace", "10.213.0.2", "lladdr", "02:00:00:00:00:02", "dev", tap.name)
    subprocess.run(tap.exec_argv([sys.executable, "-c", UDP_SENDER, str(n), str(size)]), check=True, timeout=60)


def _iproute_stats(ns: str | None, name: str) -> dict[str, dict[str, int]]:
    argv = (["-n", ns] if ns else []) + ["-s", "-j", "link", "show", "dev", name]
    stats: dict[str, dict[str, int]] = json.loads(ip(*argv).stdout)[0]["stats64"]
    return stats


@contextlib.contextmanager
def root_tap() -> Iterator[tuple[str, int]]:
    """A tap in the root netns, opened by this process (not persistent: gone when the fd closes). It is
    never given an address; IPv6 is off before it may go up, so no link-local address appears either."""
    name = unique("r")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
        subprocess.run(["sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1"], check=True, timeout=20)
        yield name, fd
    finally:
        os.close(fd)


def test_rx_counts_frames_written_to_the_tap() -> None:
    with netns_tap(addr=None) as tap:
        before = _one(tap)
        for _ in range(500):
            os.write(tap.fd, eth_frame(100))
        # tun_get_user counts rx at write(); the stack then drops the experimental ethertype quietly.
        after = _one(tap)
        sysfs = tap.stats()
    assert after.rx_packets - before.rx_packets == 500
    assert after.rx_bytes - before.rx_bytes == 500 * 100
    assert (after.rx_packets, after.rx_bytes) == (sysfs["rx_packets"], sysfs["rx_bytes"])
    assert after.tx_packets == before.tx_packets and after.rx_errors == 0


def test_tx_packets_count_when_the_reader_reads() -> None:
    # The ring (txqueuelen 4096) holds all frames until we drain them: no drops here.
    with netns_tap(txqueuelen=4096) as tap:
        _send_udp(tap, 10)  # warm-up: neighbour entry in place, stray first frames out of the way
        tap.drain()
        before = _one(tap)
        _send_udp(tap, 300)
        queued = _one(tap)
        read = tap.drain()
        after = _one(tap)
        iproute = _iproute_stats(tap.ns, tap.name)
    # tun_put_user counts tx when the frame is read from the fd, not when tun_net_xmit queues it.
    assert queued.tx_packets == before.tx_packets
    assert read == 300
    assert after.tx_packets - before.tx_packets == 300
    assert after.tx_bytes - before.tx_bytes == 300 * (14 + 20 + 8 + 200)  # Ethernet + IPv4 + UDP + payload
    assert (after.tx_packets, after.tx_bytes) == (iproute["tx"]["packets"], iproute["tx"]["bytes"])
    assert after.tx_dropped == before.tx_dropped


def test_full_tap_queue_counts_tx_dropped() -> None:
    # txqueuelen 4 and nobody reading: tun_net_xmit finds its ring full and counts tx_dropped.
    with netns_tap(txqueuelen=4) as tap:
        before = _one(tap)
        _send_udp(tap, 500)
        after = _one(tap)
        iproute = _iproute_stats(tap.ns, tap.name)
    assert after.tx_dropped - before.tx_dropped >= 400
    assert after.tx_dropped == iproute["tx"]["dropped"]
    assert after.tx_packets == before.tx_packets  # nothing was read


def test_root_netns_tap() -> None:
    with root_tap() as (name, fd):
        before = read_counters([("root", name)])[("root", name)]
        # A tap that is down refuses writes (EIO) and counts each as rx_dropped.
        for _ in range(7):
            with pytest.raises(OSError):
                os.write(fd, eth_frame(100))
        down = read_counters([("root", name)])[("root", name)]
        ip("link", "set", "dev", name, "up")
        for _ in range(50):
            os.write(fd, eth_frame(120))
        up = read_counters([("root", name)])[("root", name)]
        iproute = _iproute_stats(None, name)
        addrs = json.loads(ip("-j", "addr", "show", "dev", name).stdout)[0]["addr_info"]
    assert down.rx_dropped - before.rx_dropped == 7 and down.rx_packets == before.rx_packets
    assert up.rx_packets - down.rx_packets == 50 and up.rx_bytes - down.rx_bytes == 50 * 120
    assert (up.rx_packets, up.rx_dropped) == (iproute["rx"]["packets"], iproute["rx"]["dropped"])
    assert addrs == []


def test_missing_device_and_vanished_netns_are_absent() -> None:
    gone = unique("ns")
    ip("netns", "add", gone)
    ip("netns", "del", gone)
    # What `ip netns del` leaves for a moment: the bind mount gone, the plain file not yet unlinked.
    husk = unique("ns")
    open(f"/run/netns/{husk}", "x").close()
    try:
        with netns_tap(addr=None) as tap:
            present = (tap.ns, tap.name)
            absent = [(tap.ns, "vhrnosuchdev"), ("root", "vhrnosuchdev"), (gone, "lo"), (husk, "lo"), ("../x", "lo")]
            got = read_counters([present, *absent])
    finally:
        os.unlink(f"/run/netns/{husk}")
    assert set(got) == {present}


def test_a_tap_in_a_netns_without_a_name_is_read_through_a_process_in_it(
    tap_in_unnamed_netns: UnnamedNetnsTap,
) -> None:
    """docker's and unshare's namespaces have no /run/netns bind mount: discovery labels them net:[inode]."""
    t = tap_in_unnamed_netns
    label = f"net:[{t.netns_inode}]"
    got = read_counters([(label, t.tap), (label, "vhrnosuchdev")])
    assert set(got) == {(label, t.tap)}
    with open(f"/proc/{t.pid}/net/dev") as f:  # the holder's own view of its netns
        line = next(x for x in f if x.split(":")[0].strip() == t.tap)
    assert got[(label, t.tap)].rx_packets == int(line.split(":")[1].split()[1])
    # A label whose netns no process is in any more is absent, not an error.
    assert read_counters([("net:[1]", "lo")]) == {}


def test_reads_leave_the_process_in_its_netns() -> None:
    def ns_of_all_threads() -> set[str]:
        seen = set()
        for t in os.listdir("/proc/self/task"):
            # A worker task past exit_task_namespaces() has no netns link any more.
            with contextlib.suppress(FileNotFoundError):
                seen.add(os.readlink(f"/proc/self/task/{t}/ns/net"))
        return seen

    main_before = os.readlink("/proc/thread-self/ns/net")
    with netns_tap(addr=None) as a, netns_tap(addr=None) as b:
        read_counters([("root", "lo")])  # anything cached on first use is in place
        fds_before = sorted(os.listdir("/proc/self/fd"))
        threads_before = threading.active_count()
        for _ in range(20):
            got = read_counters([("root", "lo"), (a.ns, a.name), (b.ns, b.name)])
            assert len(got) == 3
        # Worker threads went back to our netns before exiting: no task of ours is left anywhere else, not
        # even one that Python already joined and the kernel has not yet reaped.
        assert threading.active_count() == threads_before
        assert ns_of_all_threads() == {main_before}
        assert sorted(os.listdir("/proc/self/fd")) == fds_before  # no netns kept open (or alive)
    assert os.readlink("/proc/thread-self/ns/net") == main_before


def test_root_read_from_a_thread_in_another_netns() -> None:
    """A caller thread that setns()-ed elsewhere still gets the root netns for "root"."""
    with root_tap() as (name, _fd), netns_tap(addr=None) as tap:
        expected = read_counters([("root", name)])
        result: dict[tuple[str, str], NetdevCounters] = {}

        def caller() -> None:
            nsfd = os.open(f"/run/netns/{tap.ns}", os.O_RDONLY)
            try:
                assert ctypes.CDLL(None, use_errno=True).setns(nsfd, CLONE_NEWNET) == 0
            finally:
                os.close(nsfd)
            result.update(read_counters([("root", name), ("root", tap.name)]))

        t = threading.Thread(target=caller)
        t.start()
        t.join()
    # The tap's name would resolve in the caller's netns; "root" must not.
    assert result == expected


def test_setns_refused_is_a_capability_error() -> None:
    code = (
        "import sys\n"
        "from vhtune.errors import CapabilityError\n"
        "from vhtune.probes.netdev import read_counters\n"
        "try:\n"
        "    read_counters([(sys.argv[1], sys.argv[2])])\n"
        "except CapabilityError as e:\n"
        "    print('CapabilityError', e)\n"
    )
    with netns_tap(addr=None) as tap:
        # Root without CAP_SYS_ADMIN: /run/netns/NAME opens (mode 0444), setns() is refused with EPERM.
        argv = ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", sys.executable, "-c", code]
        out = subprocess.run(
            [*argv, tap.ns, tap.name], capture_output=True, text=True, timeout=30, check=True, cwd=os.getcwd()
        )
    assert out.stdout.startswith("CapabilityError cannot read device counters"), out.stdout + out.stderr
