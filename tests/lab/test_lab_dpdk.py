"""testpmd as front-end and as back-end on one vhost-user socket: real packets, parsed counters, clean stop."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vhtune.errors import LabError, UsageError
from vhtune.lab import dpdk, names, netns

NIC_SAMPLE = """
  ######################## NIC statistics for port 0  ########################
  RX-packets: 10809056   RX-missed: 7          RX-bytes:  691779584
  RX-errors: 1
  RX-nombuf:  3
  TX-packets: 5          TX-errors: 0          TX-bytes:  320

  Throughput (since last show)
  Rx-pps:      4242          Rx-bps:            0
  Tx-pps:            2          Tx-bps:            0
  ############################################################################
"""

FWD_SAMPLE = """
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 256            TX-dropped: 132740736     TX-total: 132740992
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 256            TX-dropped: 132740736     TX-total: 132740992
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
"""


def test_parse_counters() -> None:
    (p,) = dpdk.parse_port_stats(NIC_SAMPLE)
    assert (p.port, p.rx_packets, p.rx_missed, p.rx_bytes, p.rx_errors, p.rx_nombuf) == (
        0,
        10809056,
        7,
        691779584,
        1,
        3,
    )
    assert (p.tx_packets, p.tx_bytes, p.rx_pps, p.tx_pps) == (5, 320, 4242, 2)
    (f,) = dpdk.parse_forward_stats(FWD_SAMPLE)
    assert (f.port, f.tx_packets, f.tx_dropped, f.rx_packets) == (0, 256, 132740736, 0)


def test_config_is_checked() -> None:
    with pytest.raises(UsageError):
        dpdk.TestpmdConfig("frontend", Path("/x"), mode="warp").argv()
    with pytest.raises(UsageError):
        dpdk.TestpmdConfig("frontend", Path("/x"), tap="t0").argv()
    with pytest.raises(UsageError):
        dpdk.frontend(Path("/x"), colour="red")
    argv = dpdk.TestpmdConfig("backend", Path("/s"), queues=2, tap="vhlt1x0", fwd_cpu=0).argv()
    assert "net_vhost0,iface=/s,queues=2" in argv and "net_tap0,iface=vhlt1x0" in argv
    assert argv[argv.index("-l") + 1] == "1,0"


def _sock() -> Path:
    return names.run_dir() / f"{names.lab_name('s')}.sock"


@pytest.mark.slow
def test_txonly_frontend_into_rxonly_backend(no_leftovers: None) -> None:
    sock = _sock()
    try:
        # Forwarding lcores on different CPUs (MACHINE.md).
        with dpdk.backend(sock, mode="rxonly", fwd_cpu=1) as be:
            be.start()
            with dpdk.frontend(sock, mode="txonly", fwd_cpu=0) as fe:
                be.wait_link()
                fwd = fe.run_for(1.5)
            be_stats = be.port_stats()
            be_fwd = be.stop()
        sent = dpdk.total(fwd, "tx_packets")
        got = dpdk.total(be_fwd, "rx_packets")
        assert sent > 100_000, fwd  # millions when the lcores are apart; 100k is far above the same-CPU rate
        # Everything the front-end put on the ring was consumed by the back-end.
        assert got == sent
        assert be_stats[0].rx_packets == got
    finally:
        sock.unlink(missing_ok=True)


@pytest.mark.slow
def test_backend_tap_leg_inside_netns(no_leftovers: None) -> None:
    """DPDK back-end run inside a lab netns with a tap port: front-end txonly packets come out of the tap."""
    sock = _sock()
    tap = names.lab_name("tp")
    try:
        with netns.Netns() as ns:
            with dpdk.backend(sock, mode="io", tap=tap, netns=ns, fwd_cpu=1) as be:
                be.start()
                ns.up(tap)
                with dpdk.frontend(sock, mode="txonly", fwd_cpu=0) as fe:
                    be.wait_link()
                    fe.run_for(1.0)
                st = ns.link_stats(tap)
                fwd = be.stop()
            assert ns.has_link(tap) is False  # the net_tap PMD removes its tap on close
        # Port 0 (vhost) received; port 1 (tap) transmitted them into the kernel.
        assert fwd[0].rx_packets > 1000
        assert fwd[1].tx_packets > 1000
        assert st["rx_packets"] > 1000
    finally:
        sock.unlink(missing_ok=True)


@pytest.mark.slow
def test_frontend_without_backend_is_a_clear_error(no_leftovers: None) -> None:
    sock = _sock()
    with pytest.raises(LabError, match="testpmd exited"), dpdk.frontend(sock, fwd_cpu=0):
        pass
    assert not sock.exists()
    assert os.path.basename(str(sock)).startswith(names.PREFIX)


@pytest.mark.slow
def test_hugepage_memory_leaves_no_files(no_leftovers: None) -> None:
    """--in-memory --single-file-segments: hugepage-backed, shared with the peer, nothing in /dev/hugepages."""
    sock = _sock()
    before = set(os.listdir("/dev/hugepages"))
    try:
        with dpdk.backend(sock, mode="rxonly", fwd_cpu=1, memory="hugepages", mem_mb=64) as be:
            be.start()
            with dpdk.frontend(sock, mode="txonly", fwd_cpu=0, memory="hugepages", mem_mb=64) as fe:
                be.wait_link()
                sent = dpdk.total(fe.run_for(1.0), "tx_packets")
                assert set(os.listdir("/dev/hugepages")) == before
            got = dpdk.total(be.stop(), "rx_packets")
        assert sent > 0 and got == sent
    finally:
        sock.unlink(missing_ok=True)


@pytest.mark.slow
def test_echo_loop_scenario_on_the_reference_backend(no_leftovers: None) -> None:
    from vhtune.lab import scenarios

    s = scenarios.run("dpdk-echo", scenarios.RunOptions(duration=1, backend="vhtune"))
    assert s["ok"], s["checks"]
    st = s["backend_stats"]
    # Every frame the front-end sent came back: the echo port turns guest TX into guest RX.
    assert st["from_guest_packets"] > 1000
    assert abs(st["from_guest_packets"] - st["to_guest_packets"]) <= 128


@pytest.mark.slow
def test_runtime_dir_is_removed_on_close(no_leftovers: None) -> None:
    """DPDK leaves its --file-prefix runtime dir (/var/run/dpdk/PREFIX: config, fbarrays) when it quits."""
    sock = _sock()
    try:
        with dpdk.backend(sock, mode="rxonly", fwd_cpu=1) as be:
            assert be.proc is not None
            prefix = be.proc.argv[be.proc.argv.index("--file-prefix") + 1]
            assert prefix.startswith(names.PREFIX)
            assert (Path("/var/run/dpdk") / prefix).is_dir()
        assert not (Path("/var/run/dpdk") / prefix).exists()
    finally:
        sock.unlink(missing_ok=True)
