"""Frames and derived metrics against numbers computed independently from the raw tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vhtune import api
from vhtune.analysis.metrics import hist_quantiles
from vhtune.schema import TABLES


def test_tables_are_time_indexed_with_schema_columns(synth_dir: Path) -> None:
    rec = api.load(synth_dir)
    for name in ("threads", "taps", "queues", "runq_hist", "irqs", "lost"):
        df = rec.tables[name]
        assert df.index.name == "ts"
        assert isinstance(df.index, pd.DatetimeIndex)
        assert list(df.columns) == [c for c in TABLES[name].names if c != "ts"]
    assert rec.intervals == 12
    assert rec.complete and rec.lost_events == 0
    assert [p.name for p in rec.topology.paths] == ["vm0", "vm1", "vm2"]
    vms = rec.vms
    assert list(vms.index) == ["vm0", "vm1", "vm2"]
    assert vms.loc["vm1", "backend_tids"] == [200_011] and vms.loc["vm1", "taps"] == ["vht1"]
    assert vms.loc["vm1", "vcpu_tids"] == [100_011, 100_012] and vms.loc["vm1", "backend_kind"] == "vhtune"


def test_path_metrics_match_raw_tables(synth_dir: Path) -> None:
    rec = api.load(synth_dir)
    pm = rec.path_metrics
    taps = rec.taps[rec.taps["ifname"] == "vht1"]
    raw_pps = (taps["rx_packets"] + taps["tx_packets"]) / taps["interval_s"]
    got = pm.xs("vm1", level="path")["pps"]
    assert np.allclose(got.to_numpy(), raw_pps.to_numpy())
    q = rec.queues
    calls = q[(q["role"] == "call") & (q["pid"] == 200_010)]["writes"]
    assert np.allclose(pm.xs("vm1", level="path")["calls"].to_numpy(), calls.to_numpy())
    kicks = q[(q["role"] == "kick") & (q["pid"] == 100_010)]["writes"]  # guest writes, back-end reads the same
    assert np.allclose(pm.xs("vm1", level="path")["kicks_per_pkt"].to_numpy(), (kicks / (raw_pps)).to_numpy())


def test_thread_summary_runq(synth_dir: Path) -> None:
    rec = api.load(synth_dir)
    s = rec.thread_summary.set_index("tid")
    hog, ok = s.loc[200_011], s.loc[200_001]
    assert hog["runq_pct"] > 30 > ok["runq_pct"]
    # runq_hist puts 5 % of the waits in bucket b+2: the p99 is that bucket's upper edge, 2**(b+3) ns
    assert hog["runq_p99_us"] == pytest.approx(2**23 / 1e3)
    assert ok["runq_p99_us"] == pytest.approx(2**15 / 1e3)


def test_hist_quantiles_by_hand() -> None:
    h = pd.DataFrame(
        {"tid": [1, 1, 1, 2], "bucket": [10, 11, 14, 3], "count": [50, 45, 5, 7]},
    )
    q = hist_quantiles(h, "tid")
    # tid 1: cumulative 50, 95, 100 of 100 → p50 in bucket 10 (edge 2**11), p99 in bucket 14 (edge 2**15)
    assert q.loc[1, "q0.5"] == 2**11 and q.loc[1, "q0.99"] == 2**15
    assert q.loc[2, "q0.5"] == 2**4 and q.loc[2, "q0.99"] == 2**4


def test_drops_by_reason(tmp_path: Path) -> None:
    from vhtune.analysis.synthetic import SynthSpec, write_synthetic

    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=5, faults={0: "rx-starve"}))
    rec = api.load(d)
    by = rec.drops_by_reason
    assert set(by["reason"]) == {"FULL_RING", "NO_RX_BUFFER"}
    assert int(by[by["reason"] == "FULL_RING"]["count"].sum()) == int(rec.taps["drops"].sum())
    assert int(by[by["reason"] == "NO_RX_BUFFER"]["count"].sum()) == int(rec.backend_queues["drops_no_rx_buffer"].sum())


def test_queue_metrics(synth_dir: Path) -> None:
    rec = api.load(synth_dir)
    qm = rec.queue_metrics
    be = qm[(qm["pid"] == 200_010) & (qm["queue"] == 0)]
    bq = rec.backend_queues[rec.backend_queues["pid"] == 200_010]
    assert np.allclose(be["pps"].to_numpy(), (bq["packets"] / bq["interval_s"]).to_numpy())
    assert np.allclose(be["burst"].to_numpy(), (bq["packets"] / bq["bursts"]).to_numpy())
    guest = qm[(qm["pid"] == 100_010) & (qm["queue"] == 1)]
    q = rec.queues[(rec.queues["pid"] == 100_010) & (rec.queues["role"] == "kick")]
    assert np.allclose(guest["kicks_per_s"].to_numpy(), (q["writes"] / q["interval_s"]).to_numpy())
    assert set(qm["path"]) == {"vm0", "vm1", "vm2"}
