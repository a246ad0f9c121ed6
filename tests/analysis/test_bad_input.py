"""Bad input gets one clear sentence (RecordingError with a hint), never a traceback."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vhtune import api
from vhtune.analysis.synthetic import SynthSpec, write_synthetic
from vhtune.errors import RecordingError


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vhtune", *args], capture_output=True, text=True, timeout=60, check=False
    )


def _one_clear_line(p: subprocess.CompletedProcess[str], needle: str) -> None:
    assert p.returncode == 4, p.stderr
    assert "Traceback" not in p.stderr
    first = p.stderr.splitlines()[0]
    assert first.startswith("vhtune: error: ") and needle in first, p.stderr


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.write_text("hello"), "is not a directory"),
        (lambda d: d.mkdir(), "is not a vhtune recording (no manifest.json)"),
        (lambda d: (d.mkdir(), (d / "manifest.json").write_text("{not json")), "is unreadable"),
        (lambda d: (d.mkdir(), (d / "manifest.json").write_text('{"format": "pcap"}')), "not a vhtune recording"),
    ],
    ids=["missing", "file", "empty-dir", "garbage-manifest", "foreign-manifest"],
)
def test_foreign_or_malformed(tmp_path: Path, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "x"
    make(d)
    with pytest.raises(RecordingError, match=re.escape(needle)) as e:
        api.load(d)
    assert e.value.hint
    _one_clear_line(_cli("analyze", str(d)), needle)
    if needle == "does not exist":
        _one_clear_line(_cli("report", str(d), "-o", str(tmp_path / "r.html")), needle)


def test_unknown_schema_major(tmp_path: Path) -> None:
    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=3))
    m = json.loads((d / "manifest.json").read_text())
    m["schema_version"] = "99.0"
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RecordingError, match=r"schema version 99\.0") as e:
        api.load(d)
    assert e.value.hint
    _one_clear_line(_cli("analyze", str(d)), "schema version 99.0")


def test_damaged_chunk(tmp_path: Path) -> None:
    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=3))
    chunk = next((d / "taps").glob("*.parquet"))
    chunk.write_bytes(chunk.read_bytes()[:40])
    with pytest.raises(RecordingError, match="is unreadable"):
        api.load(d)
    _one_clear_line(_cli("analyze", str(d)), "unreadable")


WRITER = textwrap.dedent(
    """
    import sys, time
    import pandas as pd
    from pathlib import Path
    from vhtune.record.writer import RecordingWriter
    w = RecordingWriter(Path(sys.argv[1]), {"interval_s": 0.05, "discovery": None})
    i = 0
    while True:
        i += 1
        ts = pd.Timestamp.now(tz="UTC")
        w.add("threads", [dict(ts=ts, interval_s=0.05, pid=7, tid=8, comm="vhtune-q0", role="backend-worker",
              oncpu_ns=49_000_000, oncpu_pct=98.0, runq_ns=0, runq_count=0, runq_p50_ns=float("nan"),
              runq_p99_ns=float("nan"), wakeups=3, vol_switches=3, invol_switches=0, migrations=0)])
        w.add("lost", [dict(ts=ts, total=0, competitor_map_full=0, drop_map_full=0, irq_map_full=0,
              wake_map_full=0, skb_owner_update=0, pending_update=0, vhost_map_full=0)])
        w.flush()
        time.sleep(0.05)
    """
)


def test_cut_short_by_sigkill(tmp_path: Path) -> None:
    """The real writer, killed with SIGKILL mid-run: everything flushed before is analysable."""
    d = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(d)])
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if json.loads((d / "manifest.json").read_text()).get("flushes", 0) >= 8:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        else:
            pytest.fail("the writer did not flush 8 chunks in 30 s")
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    (d / "threads" / "999999.parquet.tmp").write_bytes(b"half a chunk")  # as if killed inside a write
    rec = api.load(d)
    assert not rec.complete
    assert rec.intervals >= 8
    findings = api.analyze(rec)
    # one back-end thread at 98 % on-CPU, no discovery: its own path, and saturation is found
    assert [f.id for f in findings] == ["backend-thread-saturated"]
    out = _cli("analyze", str(d))
    assert out.returncode == 0 and "cut short" in out.stdout


def test_recording_without_any_interval(tmp_path: Path) -> None:
    from vhtune.record.writer import RecordingWriter

    d = tmp_path / "empty"
    RecordingWriter(d, {"interval_s": 1.0, "discovery": None})  # manifest written, then "killed"
    rec = api.load(d)
    assert rec.intervals == 0 and api.analyze(rec) == []
    assert "holds no interval" in api.render_report(rec, [], "html")
    out = _cli("analyze", str(d))
    assert out.returncode == 0 and "holds no interval" in out.stdout


def test_unwritable_report_path(tmp_path: Path) -> None:
    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=3))
    p = _cli("report", str(d), "-o", str(tmp_path / "no" / "such" / "dir" / "r.html"))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("vhtune: error: cannot write the report to "), p.stderr


def test_unknown_detector_and_only(tmp_path: Path) -> None:
    d = write_synthetic(tmp_path / "r", SynthSpec(vms=2, duration_s=5, faults={1: "cpu-hog"}))
    p = _cli("analyze", str(d), "--only", "nope")
    assert p.returncode == 2 and p.stderr.startswith("vhtune: error: unknown detector 'nope'"), p.stderr
    p = _cli("analyze", str(d), "--only", "tap-drops", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["findings"] == []
    p = _cli("analyze", str(d), "--only", "backend-cpu-contention", "--json")
    assert [f["id"] for f in json.loads(p.stdout)["findings"]] == ["backend-cpu-contention"]
