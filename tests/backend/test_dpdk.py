"""Real front-end: DPDK 22.11 ``dpdk-testpmd`` with net_virtio_user0 against ``vhtune backend`` (a child
process, the real CLI). testpmd's forwarding lcore runs on CPU 0, the back-end's workers on CPU 1."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.backend.conftest import BackendProc, wait_for
from vhtune.lab import dpdk

pytestmark = pytest.mark.slow
BURST = 32


def settled(be: BackendProc, key: str, idx: list[int]) -> int:
    """The sum of a counter over queues once it stops moving."""
    last = -1
    for _ in range(100):
        cur = sum(be.control.stats()["queues"][i][key] for i in idx)
        if cur == last:
            return cur
        last = cur
        time.sleep(0.05)
    return last


def fe(sock: str, mode: str, queues: int = 1, **kw: Any) -> dpdk.Testpmd:
    return dpdk.frontend(Path(sock), mode=mode, queues=queues, fwd_cpu=0, main_cpu=1, **kw)


@pytest.mark.parametrize("memory", ["nohuge", "hugepages"])
def test_txonly_into_sink_counts_every_packet(short_tmp: Path, memory: str) -> None:
    # nohuge: memfd guest memory; hugepages: hugetlbfs-backed, mmap length aligned to the 2 MiB page.
    be = BackendProc(short_tmp, "sink", "--cpu", "1")
    try:
        extra: dict[str, Any] = {"memory": "hugepages", "mem_mb": 64} if memory == "hugepages" else {}
        with fe(be.sock, "txonly", **extra) as t:
            assert wait_for(lambda: be.control.stats()["queues"][1]["running"], 10)
            fwd = t.run_for(1.0)
        sent = dpdk.total(fwd, "tx_packets")
        got = settled(be, "packets", [1])
        assert sent > 10_000
        assert abs(got - sent) <= BURST, (sent, got)
        q = be.control.stats()["queues"][1]
        assert q["bytes"] == got * 64 and not q["drops"]
    finally:
        report = json.loads(be.stop())
    assert report["queues"][1]["packets"] == got


def test_rxonly_from_gen(short_tmp: Path) -> None:
    be = BackendProc(short_tmp, "gen:64", "--cpu", "1")
    try:
        with fe(be.sock, "rxonly") as t:
            assert wait_for(lambda: be.control.stats()["queues"][0]["running"], 10)
            t.run_for(1.0)
            delivered = settled(be, "packets", [0])
            # NIC counters count since port start, when the back-end began filling the ring.
            received = dpdk.total(t.port_stats(), "rx_packets")
        assert received > 10_000
        # Delivered but not yet taken by testpmd when it stopped: at most one ring (256) plus a burst.
        assert 0 <= delivered - received <= 256 + BURST, (delivered, received)
    finally:
        be.stop()


def test_io_with_echo_bounces_frames(short_tmp: Path) -> None:
    be = BackendProc(short_tmp, "echo", "--cpu", "1")
    try:
        with fe(be.sock, "io") as t:
            assert wait_for(lambda: all(q["running"] for q in be.control.stats()["queues"]), 10)
            t.cmd("start tx_first")
            t.started = True
            time.sleep(1.0)
            fwd = t.stop()
        rx, tx = dpdk.total(fwd, "rx_packets"), dpdk.total(fwd, "tx_packets")
        # tx_first injects one burst; from then on every echoed frame is received and sent again.
        assert rx > 1000 and 0 <= tx - rx <= BURST, (rx, tx)
        q = be.control.stats()["queues"]
        assert q[1]["packets"] >= rx and q[0]["packets"] >= rx
    finally:
        be.stop()


def test_two_queue_pairs(short_tmp: Path) -> None:
    be = BackendProc(short_tmp, "sink", "--cpu", "1", "--queues", "2")
    try:
        with fe(be.sock, "txonly", queues=2) as t:
            assert wait_for(lambda: be.control.stats()["queues"][3]["running"], 10)
            fwd = t.run_for(1.0)
            tids = {q["tid"] for q in be.control.queues() if q["dir"] == "tx"}
            comms = {Path(f"/proc/{be.pid}/task/{tid}/comm").read_text().strip() for tid in tids}
        sent = dpdk.total(fwd, "tx_packets")
        per_q = [settled(be, "packets", [i]) for i in (1, 3)]
        assert min(per_q) > 1000, per_q
        assert abs(sum(per_q) - sent) <= 2 * BURST
        assert comms == {"vhtune-q1", "vhtune-q3"}
    finally:
        be.stop()


def test_frontend_sigkill_and_reconnect_cycles(short_tmp: Path) -> None:
    cycles = int(os.environ.get("VHTUNE_KILL_CYCLES", "20"))
    # The lean entry point (python -m vhtune.backend): the full CLI imports pandas for other commands.
    be = BackendProc(short_tmp, "echo", "--cpu", "1", lean=True)
    try:
        fds0: set[str] | None = None
        rss = []
        for k in range(cycles):
            with fe(be.sock, "io") as t:
                assert wait_for(lambda: be.control.stats()["connected"], 10)
                t.cmd("start tx_first")
                t.started = True
                before = be.control.stats()["queues"][1]["packets"]
                assert wait_for(lambda: be.control.stats()["queues"][1]["packets"] > before + 100, 10)  # noqa: B023
                os.kill(t.pid, signal.SIGKILL)
                assert t.proc is not None
                t.proc.wait(10)
                t.started = False
            assert wait_for(lambda: not be.control.stats()["connected"], 10), f"cycle {k}"
            assert not any(q["running"] for q in be.control.queues())
            if fds0 is None:
                time.sleep(0.2)  # the control server closes our last query's socket asynchronously
                fds0 = be.fds()
            else:
                assert wait_for(lambda: be.fds() == fds0, 3), f"cycle {k}: fds {sorted(be.fds() ^ fds0)}"  # noqa: B023
            rss.append(psutil.Process(be.pid).memory_info().rss)
        assert be.control.stats()["sessions"] == cycles
        assert rss[-1] - rss[0] < 16 << 20 and rss[-1] < 100 << 20, rss
    finally:
        be.stop()
    assert "Traceback" not in be.log.read_text()


def test_gen_reconnect_releases_guest_memory(short_tmp: Path) -> None:
    """After a gen session the back-end holds no mapping or fd of the old guest memory."""
    be = BackendProc(short_tmp, "gen:64", "--cpu", "1", lean=True)
    try:
        time.sleep(0.2)
        fds0 = be.fds()
        with fe(be.sock, "rxonly") as t:
            assert wait_for(lambda: be.control.stats()["queues"][0]["running"], 10)
            t.run_for(0.5)
        assert wait_for(lambda: not be.control.stats()["connected"], 10)
        assert wait_for(lambda: be.fds() == fds0, 3), sorted(be.fds() ^ fds0)
        maps = Path(f"/proc/{be.pid}/maps").read_text()
        assert "memfd" not in maps and "hugepages" not in maps
    finally:
        be.stop()
