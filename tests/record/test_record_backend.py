"""The recorder against a real data path: DPDK virtio-user (txonly) → vhtune back-end → tap in a lab netns.

Cross-checks against the back-end's own counters (control socket): packets it wrote to the tap vs the
probes' tap rx packets, kicks it drained vs the front-end's kick-eventfd writes, calls it made vs its
call-eventfd writes. Every process, socket and netns is the lab's, torn down by its context managers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.record.conftest import RecorderThread
from vhtune.lab import dpdk
from vhtune.lab.backends import BackendOptions, VhtuneBackend
from vhtune.lab.names import lab_name
from vhtune.lab.netns import Netns
from vhtune.record import Recorder, RecordOptions, Selection, read_table

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_pps_kicks_and_calls_match_the_backend_counters(tmp_path: Path, require_root: None) -> None:
    out = tmp_path / "rec"
    tap = lab_name("tp")
    with Netns() as ns:
        # suppression off: the back-end calls after every burst even though testpmd polls (so calls > 0).
        opts = BackendOptions(port="tap", tap=tap, netns=ns, cpu=1, suppression=False)
        with VhtuneBackend(opts) as be, dpdk.frontend(be.socket, mode="txonly", fwd_cpu=0) as fe:
            sel = Selection(pids=(fe.pid,), controls=(str(be.control),), taps=(tap,))
            th = RecorderThread(Recorder(RecordOptions(out, sel, interval=0.5, duration=5.0, refresh_s=1.0)), out)
            try:
                th.start_attached()
                s0 = be.stats()
                fe.start()
                time.sleep(2.0)
                fe.stop()
                time.sleep(0.5)  # the back-end drains what is left on the ring
                s1 = be.stats()
            finally:
                th.join()
    assert "summary" in th.result, th.result
    fd_rows = read_table(out, "queues")
    taps = read_table(out, "taps")
    be_pid = int(s1["raw"]["pid"]) if "pid" in s1["raw"] else None
    sent = s1["from_guest_packets"] - s0["from_guest_packets"]
    kicks = s1["kicks"] - s0["kicks"]
    calls = s1["calls"] - s0["calls"]
    rx = int(taps[taps["ifname"] == tap]["rx_packets"].sum())
    fe_kicks = int(fd_rows[(fd_rows["pid"] == fe.pid) & (fd_rows["role"] == "kick")]["writes"].sum())
    be_calls = fd_rows[(fd_rows["pid"] != fe.pid) & (fd_rows["role"] == "call")]
    print(
        f"back-end sent {sent} to the tap, probes saw {rx}; kicks {kicks} vs {fe_kicks}; calls {calls} vs "
        f"{int(be_calls['writes'].sum())}"
    )
    assert sent > 10_000
    assert rx == pytest.approx(sent, rel=0.05)
    assert kicks > 10 and fe_kicks == pytest.approx(kicks, rel=0.05)
    assert calls > 10 and int(be_calls["writes"].sum()) == pytest.approx(calls, rel=0.05)
    if be_pid is not None:
        assert set(be_calls["pid"]) == {be_pid}
    # The back-end's worker threads came from its control socket, with their role.
    threads = read_table(out, "threads")
    workers = threads[threads["role"] == "backend-worker"]
    assert set(workers["comm"]) >= {"vhtune-q1"}
    assert workers["oncpu_ns"].sum() > 0


def test_a_front_end_connecting_mid_recording_is_watched_within_a_fraction_of_a_second(
    tmp_path: Path, require_root: None
) -> None:
    """The back-end receives its call eventfds when testpmd connects, long after the recorder attached; with
    periodic re-discovery far away (refresh_s=60) only the fd-table watch can pick them up, and it must do so
    before the traffic that starts 0.8 s after the connection."""
    out = tmp_path / "rec"
    opts = BackendOptions(port="sink", cpu=1, suppression=False)  # a call after every burst
    with VhtuneBackend(opts) as be:
        be_pid = be.pid
        sel = Selection(pids=(be_pid,), controls=(str(be.control),))
        th = RecorderThread(Recorder(RecordOptions(out, sel, interval=0.5, duration=6.0, refresh_s=60.0)), out)
        try:
            th.start_attached()
            with dpdk.frontend(be.socket, mode="txonly", fwd_cpu=0) as fe:
                time.sleep(0.8)  # connected, rings enabled; no traffic yet
                s0 = be.stats()
                fe.start()
                time.sleep(1.5)
                fe.stop()
                time.sleep(0.3)
                s1 = be.stats()
        finally:
            th.join()
    assert "summary" in th.result, th.result
    fd_rows = read_table(out, "queues")
    calls = s1["calls"] - s0["calls"]
    got = int(fd_rows[(fd_rows["pid"] == be_pid) & (fd_rows["role"] == "call")]["writes"].sum())
    print(f"back-end calls {calls}, recorded call-eventfd writes {got}")
    assert calls > 10
    assert got == pytest.approx(calls, rel=0.05)
