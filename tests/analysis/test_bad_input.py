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

import pyarrow as pa
import pyarrow.parquet as pq
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
    with pytest.raises(RecordingError, match="is unreadable") as e:
        api.load(d)
    assert "--skip-damaged" in str(e.value.hint)  # the way to the rest of the recording
    _one_clear_line(_cli("analyze", str(d)), "unreadable")


def _damage(d: Path) -> dict[str, Path]:
    """A 40-interval recording of a CPU hog, 10 intervals per chunk, with three chunks damaged three ways."""
    threads = sorted((d / "threads").glob("*.parquet"))
    taps = sorted((d / "taps").glob("*.parquet"))
    lost = sorted((d / "lost").glob("*.parquet"))
    assert len(threads) == len(taps) == len(lost) == 4
    threads[1].write_bytes(threads[1].read_bytes()[:40])  # torn (a bad sector, a partial copy)
    pq.write_table(pq.read_table(taps[2]).drop_columns(["rx_pps"]), taps[2])  # a column gone
    t = pq.read_table(lost[3])
    pq.write_table(t.set_column(t.schema.get_field_index("total"), "total", pa.array(["x"] * len(t))), lost[3])
    return {"threads": threads[1], "taps": taps[2], "lost": lost[3]}


def test_skip_damaged_keeps_the_rest_of_the_recording(tmp_path: Path) -> None:
    """Nothing is lost to one bad chunk: --skip-damaged leaves out exactly the damaged chunks, says which, and
    the findings of the rest are still there."""
    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=40, chunk_intervals=10, faults={0: "cpu-hog"}))
    whole = api.load(d)
    bad = _damage(d)
    with pytest.raises(RecordingError, match=re.escape(f"chunk {bad['threads']} is unreadable")):
        api.load(d)
    rec = api.load(d, skip_damaged=True)
    for table, chunk in bad.items():  # each damaged chunk's rows, and only those, are left out
        left_out = pq.read_metadata(chunk).num_rows if table != "threads" else len(whole.threads) // 4
        assert len(rec.tables[table]) == len(whole.tables[table]) - left_out, table
        assert any(s.startswith(f"chunk {chunk} ") for s in rec.damaged), rec.damaged
    assert "lacks columns ['rx_pps']" in " ".join(rec.damaged)
    assert "has column total of the wrong type" in " ".join(rec.damaged)
    assert any(s.startswith("table threads: 30 of the 120 rows") for s in rec.damaged), rec.damaged  # 3 threads
    assert [f.id for f in api.analyze(rec)][:1] == [f.id for f in api.analyze(whole)][:1] == ["backend-cpu-contention"]

    out = _cli("analyze", str(d), "--skip-damaged")
    assert out.returncode == 0, out.stderr
    warnings = out.stderr.splitlines()
    assert len(warnings) == len(rec.damaged) and all(w.startswith("vhtune: warning: left out: ") for w in warnings)
    assert "backend-cpu-contention" in out.stdout
    facts = json.loads(_cli("analyze", str(d), "--skip-damaged", "--json").stdout)["recording"]
    assert facts["damaged"] == rec.damaged
    md = tmp_path / "r.md"
    assert _cli("report", str(d), "--skip-damaged", "-o", str(md)).returncode == 0
    assert md.read_text().count("**Left out (damaged):**") == len(rec.damaged)
    assert api.render_report(rec, [], "html").count("<b>Left out (damaged):</b>") == len(rec.damaged)
    _one_clear_line(_cli("report", str(d), "-o", str(md)), "is unreadable")  # without the flag: refused


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


def _set_column(chunk: Path, name: str, values: object) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(chunk)
    pq.write_table(t.set_column(t.column_names.index(name), name, pa.array(values)), chunk)


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [("taps", "rx_packets", "x"), ("taps", "ts", "x"), ("taps", "rx_packets", None), ("backend_queues", "ts", "x")],
    ids=["text-in-int", "text-in-ts", "null-in-int", "backend-queues-ts"],
)
def test_chunk_with_a_column_of_the_wrong_type(tmp_path: Path, table: str, column: str, value: object) -> None:
    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=3))
    chunk = next((d / table).glob("*.parquet"))
    _set_column(chunk, column, [value] * 3 if value is not None else [None, None, None])
    with pytest.raises(RecordingError, match=re.escape(f"chunk {chunk} ")) as e:
        api.load(d)
    assert column in e.value.message and e.value.hint
    _one_clear_line(_cli("analyze", str(d)), str(chunk))
    _one_clear_line(_cli("report", str(d), "-o", str(tmp_path / "r.html")), str(chunk))


@pytest.mark.parametrize("column", ["oncpu_pct", "comm", "wakeups"])
def test_one_chunk_lacking_a_column_is_named_not_filled_with_nan(tmp_path: Path, column: str) -> None:
    import pyarrow.parquet as pq

    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=6))
    first = d / "threads" / "000001.parquet"
    t = pq.read_table(first)
    half = t.num_rows // 2
    pq.write_table(t.slice(0, half), first)
    pq.write_table(t.slice(half).drop([column]), d / "threads" / "000002.parquet")
    with pytest.raises(RecordingError, match=re.escape(f"chunk {d / 'threads' / '000002.parquet'} lacks")):
        api.load(d)
    _one_clear_line(_cli("analyze", str(d)), "000002.parquet lacks")


def _edit_manifest(d: Path, text: str) -> None:
    (d / "manifest.json").write_text(text)


def _with(d: Path, **kv: object) -> str:
    m = json.loads((d / "manifest.json").read_text())
    return json.dumps({**m, **kv})


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda d: _with(d, schema_version="abc"), "schema version"),
        (lambda d: _with(d, schema_version=None), "schema version"),
        (lambda d: _with(d, schema_version="9" * 5000), "schema version"),
        (lambda d: _with(d, interval_s="abc"), "interval_s"),
        (lambda d: _with(d, interval_s=10**400), "interval_s"),
        (lambda d: _with(d, interval_s=-1), "interval_s"),
        (lambda d: _with(d, interval_s=[1]), "interval_s"),
        (lambda d: _with(d, interval_s=True), "interval_s"),
        (lambda d: _with(d)[:-1] + ', "interval_s": NaN}', "interval_s"),
        (lambda d: _with(d, complete="false"), "complete"),
        (lambda d: _with(d, probes=[1, 2]), "probes"),
        (lambda d: _with(d, probes="abc"), "probes"),
        (lambda d: '{"format": "vhtune-recording", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "is unreadable"),
    ],
    ids=[
        "version-text",
        "version-null",
        "version-huge",
        "interval-text",
        "interval-huge-int",
        "interval-negative",
        "interval-list",
        "interval-bool",
        "interval-nan",
        "complete-text",
        "probes-list",
        "probes-text",
        "deeply-nested",
    ],
)
def test_manifest_values_of_the_wrong_shape(tmp_path: Path, edit, needle: str) -> None:  # type: ignore[no-untyped-def]
    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=3))
    _edit_manifest(d, edit(d))
    with pytest.raises(RecordingError, match=re.escape(needle)) as e:
        api.load(d)
    assert "manifest.json" in e.value.message and e.value.hint
    _one_clear_line(_cli("analyze", str(d)), needle)
    _one_clear_line(_cli("report", str(d), "-o", str(tmp_path / "r.html")), needle)


def test_chunks_missing_on_disk_are_said_not_silently_dropped(tmp_path: Path) -> None:
    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=6))
    (d / "threads" / "000001.parquet").unlink()
    with pytest.raises(RecordingError, match=r"table threads .* 0 rows on disk .* 18") as e:
        api.load(d)
    assert e.value.hint
    _one_clear_line(_cli("analyze", str(d)), "table threads")


def test_chunks_on_disk_beyond_the_manifest_load(tmp_path: Path) -> None:
    """Killed between a chunk's rename and the manifest's: the chunk is there, the manifest does not count it."""
    import shutil

    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=6))
    shutil.copy(d / "threads" / "000001.parquet", d / "threads" / "000002.parquet")
    assert len(api.load(d).threads) == 36


def _unreadable_dir(d: Path) -> None:
    d.chmod(0o311)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: (__import__("shutil").rmtree(d / "taps"), (d / "taps").write_text("x")), "taps is unreadable"),
        (lambda d: (__import__("shutil").rmtree(d / "taps"), (d / "taps").symlink_to("taps")), "taps is unreadable"),
        (lambda d: _unreadable_dir(d / "taps"), "taps is unreadable"),
        (lambda d: _unreadable_dir(d), "r/manifest.json"),
    ],
    ids=["table-is-a-file", "table-symlink-loop", "table-dir-unreadable", "recording-dir-unreadable"],
)
def test_unreadable_table_or_recording_directory(tmp_path: Path, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    d = write_synthetic(tmp_path / "r", SynthSpec(vms=1, duration_s=3))
    make(d)
    if d.stat().st_mode & 0o400 == 0:
        (d / "manifest.json").chmod(0)
    # as root without the capabilities that skip permission checks, like the user who runs vhtune
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    try:
        for args in (["analyze", str(d)], ["report", str(d), "-o", str(tmp_path / "r.html")]):
            p = subprocess.run(
                [*drop, sys.executable, "-m", "vhtune", *args], capture_output=True, text=True, timeout=60, check=False
            )
            _one_clear_line(p, needle)
    finally:
        d.chmod(0o755)
        if (d / "taps").is_dir() and not (d / "taps").is_symlink():
            (d / "taps").chmod(0o755)
