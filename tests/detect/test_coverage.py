"""Detectors whose inputs a recording lacks are listed as not judged, in every output."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vhtune import api
from vhtune.analysis.synthetic import SynthSpec, write_synthetic
from vhtune.record.writer import RecordingWriter


def test_full_synthetic_judges_everything_but_numa(tmp_path: Path) -> None:
    rec = api.load(write_synthetic(tmp_path / "s", SynthSpec(vms=1, duration_s=5)))
    gaps = {k: v for k, v in api.coverage(rec).items() if v}
    assert list(gaps) == ["cross-numa"]
    rec2 = api.load(write_synthetic(tmp_path / "n", SynthSpec(vms=1, duration_s=5, cpus=4, nodes=2)))
    assert not any(api.coverage(rec2).values())


def test_threads_only_recording(tmp_path: Path) -> None:
    d = tmp_path / "t"
    w = RecordingWriter(d, {"interval_s": 1.0, "discovery": None})
    for i in range(3):
        ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=i)
        thread = dict(ts=ts, interval_s=1.0, pid=7, tid=8, comm="vhost-7", role="vhost-worker", oncpu_ns=10**8)
        thread |= dict(oncpu_pct=10.0, runq_ns=0, runq_count=0, runq_p50_ns=float("nan"), runq_p99_ns=float("nan"))
        thread |= dict(wakeups=1, vol_switches=1, invol_switches=0, migrations=0)
        w.add("threads", [thread])
        lost = dict(ts=ts, total=0, competitor_map_full=0, drop_map_full=0, irq_map_full=0, wake_map_full=0)
        w.add("lost", [lost | dict(skb_owner_update=0, pending_update=0, vhost_map_full=0)])
    w.close("test")
    rec = api.load(d)
    cov = api.coverage(rec)
    assert cov["backend-cpu-contention"] is None and cov["backend-thread-saturated"] is None
    assert cov["tap-drops"] == "no tap was recorded"
    assert "--control" in str(cov["kick-storm"])
    html = api.render_report(rec, [], "html")
    assert "Not judged" in html and "no tap was recorded" in html
    assert "no tap was recorded" in api.render_report(rec, [], "md")
    assert '"tap-drops": "no tap was recorded"' in api.render_report(rec, [], "json")
