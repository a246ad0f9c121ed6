"""Intervals of unequal length (a stalled recorder loop stretches one): every rate and share over the recording
is sum(count) / sum(seconds), never a mean of per-interval rates."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from vhtune import api
from vhtune.analysis.recording import Recording
from vhtune.analysis.synthetic import SynthSpec, write_synthetic

WORKER = 200_001  # the synthetic VM 0's back-end worker


def stretch_first(rec: Recording, seconds: float) -> None:
    """The first interval lasted ``seconds`` with the same counts (a stall: 1/seconds of the usual rates)."""
    first = rec.threads.index.min()
    for name in ("threads", "taps", "queues", "backend_queues"):
        df = rec.tables[name]
        if len(df) and "interval_s" in df.columns:
            df.loc[df.index == first, "interval_s"] = seconds
    t = rec.tables["threads"]
    m = t.index == first
    t.loc[m, "oncpu_pct"] = (100.0 * t.loc[m, "oncpu_ns"] / (seconds * 1e9)).to_numpy()
    for k in ("thread_metrics", "thread_summary", "path_metrics", "tap_metrics", "queue_metrics"):
        rec.__dict__.pop(k, None)


@pytest.fixture
def rec(tmp_path: Path) -> Recording:
    return api.load(write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=6, faults={0: "cpu-hog"}, seed=2)))


def test_thread_summary_is_time_weighted(rec: Recording) -> None:
    stretch_first(rec, 10.0)
    t = rec.threads[rec.threads["tid"] == WORKER]
    seconds = t["interval_s"].sum()
    s = rec.thread_summary.set_index("tid").loc[WORKER]
    assert s["oncpu_pct"] == pytest.approx(100.0 * t["oncpu_ns"].sum() / (seconds * 1e9))
    assert s["runq_pct"] == pytest.approx(100.0 * t["runq_ns"].sum() / (seconds * 1e9))
    assert s["wakeups_per_s"] == pytest.approx(t["wakeups"].sum() / seconds)


@pytest.mark.parametrize(
    ("fault", "finding", "metric", "table", "col"),
    [
        ("burst-1", "small-batches", "packets", "backend_queues", "packets"),
        ("notify-storm", "kick-storm", "packets", "backend_queues", "packets"),
        ("tiny-txqueuelen", "tap-drops", "drops", "taps", "drops"),
        ("halt-poll", "vcpu-halt-polling", "vCPU wake-ups", "vcpu_wakeups", "wakeups"),
    ],
)
def test_context_rates_are_sum_over_seconds(
    tmp_path: Path, fault: str, finding: str, metric: str, table: str, col: str
) -> None:
    rec = api.load(write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=8, faults={0: fault}, seed=4)))
    stretch_first(rec, 10.0)
    f = next(f for f in api.analyze(rec) if f.id == finding)
    ev = next(e for e in f.evidence if e.metric == metric and e.source == "context")
    seconds = rec.threads.groupby(level=0)["interval_s"].max().sum()
    assert ev.value == pytest.approx(rec.tables[table][col].sum() / seconds)


def test_cpu_seen_busy_share_uses_the_intervals_own_lengths(rec: Recording) -> None:
    """A data-path thread seen on a CPU for 3 % of the real span (8 % of the nominal one) does not take it."""
    from vhtune.detect.placement import _running

    t = rec.tables["threads"]
    t["interval_s"] = 3.0  # every interval stretched to 3 s (nominal 1 s)
    span_s = 3.0 * rec.intervals
    ts = t.index.unique()
    comp = pd.DataFrame(
        {"cpu": 5, "pid": 100_000, "tid": 100_001, "comm": "CPU 0/KVM", "ns": int(0.03 * span_s * 1e9) // len(ts)},
        index=ts,
    )
    comp["slices"] = 1
    rec.tables["competitors"] = comp[rec.competitors.columns]
    assert _running(rec, (None, WORKER)) == []


def test_measured_oncpu_used_for_placement_is_time_weighted(rec: Recording) -> None:
    # How busy placement believes a pinned data-path thread is: its on-CPU time over the recording's real span,
    # not a mean of per-interval percentages that counts a 10 s stall like a 1 s interval.
    from vhtune.detect.placement import _measured_oncpu

    stretch_first(rec, 10.0)
    t = rec.threads[rec.threads["tid"] == WORKER]
    me = (int(t["pid"].iloc[0]), WORKER)
    assert _measured_oncpu(rec)[me] == pytest.approx(100.0 * t["oncpu_ns"].sum() / (t["interval_s"].sum() * 1e9))
