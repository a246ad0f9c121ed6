"""Exporter state: interval deltas fold into monotonic counters; the histogram keeps the kernel's log2 bounds."""

from __future__ import annotations

import socket
import urllib.request

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from vhtune.errors import UsageError
from vhtune.exporter.server import parse_listen, serve
from vhtune.exporter.state import ExporterState, FindingGauge

TS = pd.Timestamp("2026-01-01", tz="UTC")


def thread_row(tid: int, oncpu_ns: int, runq_ns: int) -> dict[str, object]:
    return dict(
        ts=TS, interval_s=1.0, pid=10, tid=tid, comm=f"vhtune-q{tid}", role="backend-worker", oncpu_ns=oncpu_ns,
        oncpu_pct=oncpu_ns / 1e7, runq_ns=runq_ns, runq_count=2, wakeups=2, vol_switches=2, invol_switches=0,
        migrations=1,
    )  # fmt: skip


def scrape(state: ExporterState) -> dict[str, list[tuple[dict[str, str], float]]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, _ = serve(state, "127.0.0.1", port)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.shutdown()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for smp in fam.samples:
            out.setdefault(smp.name, []).append((smp.labels, smp.value))
    return out


def test_counters_accumulate_and_histogram_has_log2_bounds() -> None:
    st = ExporterState()
    for i in range(3):
        st.update(
            {
                "threads": [thread_row(1, 400_000_000, 3000)],
                "runq_hist": [dict(ts=TS, pid=10, tid=1, bucket=10, lo_ns=1024, count=2)],
                "taps": [
                    dict(
                        ts=TS,
                        interval_s=1.0,
                        ifname="tap0",
                        netns="ns",
                        rx_packets=100,
                        rx_bytes=6400,
                        tx_packets=50,
                        tx_bytes=3200,
                        tx_errors=0,
                        tx_queued=50,
                        drops=i,
                        rx_pps=100.0,
                        tx_pps=50.0,
                    )
                ],
                "lost": [dict(ts=TS, total=0, drop_map_full=0)],
            },
            now=float(i),
        )
    st.set_findings([FindingGauge("tap-drops", "tap0", "warning")])
    m = scrape(st)
    cpu = m["vhtune_thread_cpu_seconds_total"]
    assert len(cpu) == 1 and cpu[0][1] == pytest.approx(1.2)
    rx = [v for lab, v in m["vhtune_tap_packets_total"] if lab["direction"] == "rx"]
    assert rx == [300.0]
    assert m["vhtune_tap_drops_total"][0][1] == 3.0
    buckets = {lab["le"]: v for lab, v in m["vhtune_thread_runq_wait_seconds_bucket"]}
    # bucket 10 holds waits in [1024, 2048) ns: cumulative count jumps at le=2048 ns, not before.
    assert buckets[repr(1024 / 1e9)] == 0.0 and buckets[repr(2048 / 1e9)] == 6.0 and buckets["+Inf"] == 6.0
    assert m["vhtune_thread_runq_wait_seconds_sum"][0][1] == pytest.approx(9000 / 1e9)
    assert m["vhtune_finding_active"] == [({"id": "tap-drops", "subject": "tap0", "severity": "warning"}, 1.0)]
    st.forget(tids={1}, taps={"tap0"})
    m = scrape(st)
    assert "vhtune_thread_cpu_seconds_total" not in m and "vhtune_tap_packets_total" not in m


def test_listen_is_loopback_unless_explicit() -> None:
    assert parse_listen("127.0.0.1:9465", allow_public=False) == ("127.0.0.1", 9465)
    assert parse_listen("[::1]:9465", allow_public=False) == ("::1", 9465)
    with pytest.raises(UsageError, match="non-loopback"):
        parse_listen("0.0.0.0:9465", allow_public=False)
    assert parse_listen("0.0.0.0:9465", allow_public=True) == ("0.0.0.0", 9465)
    with pytest.raises(UsageError, match="HOST:PORT"):
        parse_listen("localhost", allow_public=False)


def test_series_of_exited_injectors_and_renamed_threads_do_not_pile_up() -> None:
    # KVM injections are labelled with the injecting context's pid, often a kworker the recorder never targets
    # (so never lets go of); kworkers come and go over hours. A thread that renames itself starts a new series.
    # Neither may grow the label set without bound.
    import os
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists (and is not ours)
    st = ExporterState()
    live = os.getpid()
    for i, pid in enumerate((gone.pid, live)):
        st.update({"irqs": [dict(ts=TS, pid=pid, kind="set_irq", gsi=5, level=1, via_pid=-1, via_fd=-1, count=3)]}, i)
    renamed = {**thread_row(7, 1000, 0), "comm": "worker-old"}
    st.update({"threads": [renamed]}, 2.0)
    st.update({"threads": [{**renamed, "comm": "worker-new"}]}, 3.0)
    st.prune_exited()
    m = scrape(st)
    assert [lab["pid"] for lab, _ in m["vhtune_kvm_injections_total"]] == [str(live)]
    assert [lab["comm"] for lab, _ in m["vhtune_thread_cpu_seconds_total"]] == ["worker-new"]
    assert {lab["comm"] for lab, _ in m["vhtune_thread_switches_total"]} == {"worker-new"}
