"""Real QEMU TCG guests booted from the Debian-built image (each boot ≈ 5-10 s and ~0.6 GiB: few of them)."""

from __future__ import annotations

from typing import Any

import pytest

from vhtune.lab import scenarios


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
