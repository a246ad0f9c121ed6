"""Real QEMU TCG guests booted from the Debian-built image (each boot ≈ 5-10 s and ~0.6 GiB: few of them)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from typing import Any

import pytest

from vhtune.lab import scenarios
from vhtune.lab.names import PREFIX
from vhtune.lab.scenario_base import GUEST_CIDR, HOST_IP


def _run(name: str, **kw: Any) -> dict[str, Any]:
    return scenarios.run(name, scenarios.RunOptions(**kw))


@pytest.mark.slow
def test_guest_pings_the_lab_netns_through_dpdk_vhost(no_leftovers: None) -> None:
    s = _run("guest-ping", duration=3, backend="dpdk")
    assert s["ok"], s["checks"]
    g = s["guest"]
    assert g["received"] > 100 and g["received"] == g["sent"]
    # Every frame the guest transmitted went through the back-end and came out of the tap in the netns.
    assert s["backend_stats"]["from_guest_packets"] == g["eth0_tx_total"] == s["tap"]["rx_packets"]
    assert s["elapsed_s"] < 30


# Runs inside the scenario's netns: broadcast ARP who-has <guest> from the netns' tap every 2 ms, bounded in
# count and time, until the guest is gone. The kernel sends such probes by itself (a neighbour entry goes
# DELAY -> PROBE 5 s after its first use); this makes one land in every window.
_ARP_PROBER = r"""
import socket, struct, sys, time
tap, src, dst = sys.argv[1], socket.inet_aton(sys.argv[2]), socket.inet_aton(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((tap, 0))
mac = open(f"/sys/class/net/{tap}/address").read().strip()
sha = bytes.fromhex(mac.replace(":", ""))
frame = b"\xff" * 6 + sha + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + sha + src + b"\0" * 6 + dst
end = time.monotonic() + 60
for _ in range(30000):
    if time.monotonic() > end:
        break
    try:
        s.send(frame)
    except OSError:
        break  # the tap went away with its back-end
    time.sleep(0.002)
"""


def _probe_guest_arp_until(done: threading.Event, procs: list[subprocess.Popen[bytes]]) -> None:
    """Once this process's lab netns and its tap exist, start the ARP prober inside it."""
    mine = f"{PREFIX}n{os.getpid()}x"
    while not done.wait(0.1):
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for ns in (line.split()[0] for line in out.splitlines() if line.startswith(mine)):
            links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True, text=True).stdout
            taps = [w.rstrip(":").split("@")[0] for line in links.splitlines() for w in line.split()[1:2]]
            taps = [t for t in taps if t.startswith(f"{PREFIX}tp")]
            addrs = subprocess.run(["ip", "-n", ns, "-o", "-4", "addr"], capture_output=True, text=True).stdout
            if taps and HOST_IP in addrs:
                argv = ["ip", "netns", "exec", ns, sys.executable, "-c", _ARP_PROBER, taps[0], HOST_IP]
                procs.append(subprocess.Popen([*argv, GUEST_CIDR.split("/")[0]]))
                return


@pytest.mark.slow
def test_guest_counts_stay_exact_while_the_peer_keeps_arp_probing_it(no_leftovers: None) -> None:
    done, procs = threading.Event(), list[subprocess.Popen[bytes]]()
    watcher = threading.Thread(target=_probe_guest_arp_until, args=(done, procs))
    watcher.start()
    try:
        s = _run("guest-ping", duration=2, backend="vhtune")
    finally:
        done.set()
        watcher.join()
        for p in procs:
            p.kill()
            p.wait()
    assert procs, "the ARP prober never started"
    # The guest answered probes (its ARP replies are in both counts), and none after it read its counter.
    assert s["guest"]["eth0_tx_total"] > s["guest"]["sent"] + 10, s["guest"]
    assert s["backend_stats"]["from_guest_packets"] == s["guest"]["eth0_tx_total"], s["checks"]


@pytest.mark.slow
def test_guest_pings_the_lab_netns_through_the_reference_backend(no_leftovers: None) -> None:
    s = _run("guest-ping", duration=3, backend="vhtune")
    assert s["ok"], s["checks"]
    assert s["guest"]["received"] > 100
    assert s["backend_stats"]["from_guest_packets"] == s["guest"]["eth0_tx_total"]


@pytest.mark.slow
def test_guest_pktgen_count_matches_backend_and_tap(no_leftovers: None) -> None:
    n = 20_000
    s = _run("guest-pktgen", duration=5, backend="vhtune", count=n)
    detail = (s["checks"], s["guest"], s["backend_stats"], s["tap"])
    assert s["ok"], detail
    assert s["guest"]["sent"] == n, detail
    assert s["backend_stats"]["from_guest_packets"] == s["guest"]["eth0_tx_total"] >= n, detail


@pytest.mark.slow
def test_iperf3_into_guest_completes_and_tiny_txqueuelen_drops_at_the_tap(no_leftovers: None) -> None:
    s = _run("guest-iperf3", duration=3, backend="dpdk", reverse=True, faults=["tiny-txqueuelen"])
    assert s["checks"]["iperf3_completed"] and s["checks"]["server_saw_data"], s
    # txqueuelen 4 and a reader taking one frame per burst: the tap's queue overflows (none without the fault).
    assert s["drops"]["tap_tx_dropped"] > 0
    assert "tiny-txqueuelen" in s["fault_notes"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["dpdk", "vhtune"])
def test_guest_with_two_queue_pairs(backend: str, no_leftovers: None) -> None:
    s = _run("guest-pktgen", duration=3, backend=backend, queues=2, count=5000)
    assert s["ok"], s["checks"]
    assert s["guest"]["sent"] == 5000


@pytest.mark.slow
def test_generator_into_an_idle_guest(no_leftovers: None) -> None:
    s = _run("guest-rx", duration=3, backend="vhtune")
    assert s["ok"], s["checks"]
    # The guest received real frames from the back-end's generator, no more than were put on its ring.
    assert 0 < s["guest"]["eth0_rx"] <= s["backend_stats"]["to_guest_packets"]
