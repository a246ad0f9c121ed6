"""The recording on disk without probes: chunks, manifest, reader, crash leftovers, disk full, read-only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from vhtune.errors import RecordingError
from vhtune.record import RecordingWriter, chunk_files, read_manifest, read_table
from vhtune.record.rows import hist_quantile
from vhtune.schema import MANIFEST_NAME, TABLES


def _thread_row(i: int) -> dict[str, object]:
    return {
        "ts": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=i),
        "interval_s": 1.0,
        "pid": 10,
        "tid": 11,
        "comm": "vhtune-q0",
        "role": "backend-worker",
        "oncpu_ns": i * 1000,
        "oncpu_pct": 0.1 * i,
        "runq_ns": 5,
        "runq_count": 1,
        "runq_p50_ns": math.nan,
        "runq_p99_ns": 2.0**20,
        "wakeups": i,
        "vol_switches": 1,
        "invol_switches": 0,
        "migrations": 0,
    }


def test_chunks_append_and_read_back_with_schema_dtypes(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "rec", {"host": "h"})
    w.add("threads", [_thread_row(i) for i in range(3)])
    w.flush()
    w.add("threads", [_thread_row(i) for i in range(3, 5)])
    w.close("duration")
    df = read_table(tmp_path / "rec", "threads")
    assert list(df.columns) == TABLES["threads"].names
    assert df["wakeups"].tolist() == [0, 1, 2, 3, 4]
    assert str(df["ts"].dtype) == "datetime64[ns, UTC]"
    assert len(chunk_files(tmp_path / "rec", "threads")) == 2
    m = read_manifest(tmp_path / "rec")
    assert m["complete"] is True and m["stop_reason"] == "duration" and m["rows"]["threads"] == 5
    empty = read_table(tmp_path / "rec", "taps")
    assert empty.empty and list(empty.columns) == TABLES["taps"].names


def test_leftover_tmp_chunk_of_a_killed_writer_is_ignored(tmp_path: Path) -> None:
    w = RecordingWriter(tmp_path / "rec", {})
    w.add("threads", [_thread_row(1)])
    w.flush()
    (tmp_path / "rec" / "threads" / "000002.parquet.tmp").write_bytes(b"PAR1 half a chunk")
    assert len(read_table(tmp_path / "rec", "threads")) == 1
    assert read_manifest(tmp_path / "rec")["complete"] is False  # never closed: cut short


def test_refuses_foreign_or_newer_or_reused_directories(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="not a vhtune recording"):
        read_table(tmp_path, "threads")
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": "vhtune-recording", "schema_version": "99.0"}))
    with pytest.raises(RecordingError, match=r"schema version 99\.0"):
        read_table(tmp_path, "threads")
    with pytest.raises(RecordingError, match="already holds a recording"):
        RecordingWriter(tmp_path, {})
    w = RecordingWriter(tmp_path / "ok", {})
    w.close("x")
    with pytest.raises(RecordingError, match="unknown table 'nope'"):
        read_table(tmp_path / "ok", "nope")


def test_disk_full_is_a_clear_error_and_earlier_chunks_stay_valid(tiny_fs: Path) -> None:
    w = RecordingWriter(tiny_fs / "rec", {})
    w.add("threads", [_thread_row(i) for i in range(10)])
    w.flush()
    with pytest.raises(RecordingError, match="disk is full") as info:
        for _ in range(200):  # ≈ 40 KiB of incompressible comm strings per chunk: ENOSPC soon
            w.add("threads", [{**_thread_row(i), "comm": f"{i:x}" * 300} for i in range(40)])
            w.flush()
    assert "stay readable" in str(info.value)
    df = read_table(tiny_fs / "rec", "threads")
    assert len(df) >= 10 and df["wakeups"].iloc[:10].tolist() == list(range(10))
    assert not [p for p in (tiny_fs / "rec" / "threads").iterdir() if p.name.endswith(".tmp")]


def test_read_only_directory_is_a_clear_error(readonly_fs: Path) -> None:
    with pytest.raises(RecordingError, match="read-only"):
        RecordingWriter(readonly_fs / "rec", {})


def test_hist_quantile_uses_bucket_upper_edges() -> None:
    counts = [0] * 40
    counts[10] = 98
    counts[20] = 2
    assert hist_quantile(counts, 0.5) == 2.0**11
    assert hist_quantile(counts, 0.99) == 2.0**21
    assert math.isnan(hist_quantile([0] * 40, 0.99))


def test_new_directories_are_durable_before_the_manifest_counts_their_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory entry is data of its parent: after power loss the manifest must not name rows whose table
    directory (or recording directory) was never made durable."""
    import os

    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    rec = tmp_path / "parent" / "rec"
    w = RecordingWriter(rec, {})
    first = events.index(("replace", str(rec / MANIFEST_NAME)))
    assert ("fsync", str(rec.parent)) in events[:first]
    del events[:]
    w.add("threads", [_thread_row(1)])
    w.flush()
    at = events.index(("replace", str(rec / MANIFEST_NAME)))
    assert ("fsync", str(rec / "threads")) in events[:at]
    assert ("fsync", str(rec)) in events[:at]  # the new threads/ entry in rec, before the manifest counts it


def test_a_chunk_renamed_into_place_is_never_written_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # fsync of the directory can fail (EIO) after the chunk was renamed into place: the chunk is there, so its rows
    # are written; writing them again at the next flush would load them twice.
    from vhtune import fsutil

    w = RecordingWriter(tmp_path / "rec", {})
    w.add("threads", [_thread_row(i) for i in range(3)])
    w.flush()
    real = fsutil.fsync_dir

    def failing(path: Path) -> None:
        if path.name == "threads":
            raise OSError(5, "Input/output error")
        real(path)

    monkeypatch.setattr(fsutil, "fsync_dir", failing)
    w.add("threads", [_thread_row(i) for i in range(3, 5)])
    with pytest.raises(RecordingError, match="Input/output error"):
        w.flush()
    monkeypatch.setattr(fsutil, "fsync_dir", real)
    w.close("SIGINT")
    df = read_table(tmp_path / "rec", "threads")
    assert df["wakeups"].tolist() == [0, 1, 2, 3, 4]
    assert read_manifest(tmp_path / "rec")["rows"]["threads"] == 5


def _tap_row(ifname: str, netns: str) -> dict[str, object]:
    return {
        "ts": pd.Timestamp("2026-01-01", tz="UTC"),
        "interval_s": 1.0,
        "ifname": ifname,
        "netns": netns,
        **dict.fromkeys(("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_errors", "tx_queued", "drops"), 1),
        "rx_pps": 1.0,
        "tx_pps": 1.0,
    }


def test_tap_drops_written_before_schema_1_1_read_with_the_netns_of_their_tap(tmp_path: Path) -> None:
    """Schema 1.0 keyed tap drops by name only (no netns column). Such a chunk still loads: each drop gets the
    netns its name had in the taps table when that was one, else "?"."""
    import pyarrow.parquet as pq

    rec = tmp_path / "rec"
    w = RecordingWriter(rec, {})
    w.add("taps", [_tap_row("vnet0", "ns1"), _tap_row("tap0", "ns1"), _tap_row("tap0", "ns2")])
    drop = {"ts": pd.Timestamp("2026-01-01", tz="UTC"), "direction": "tx", "reason": 7, "reason_name": "FULL_RING"}
    w.add("tap_drops", [{**drop, "netns": "x", "ifname": n, "count": 3} for n in ("vnet0", "tap0", "gone0")])
    w.close("duration")
    (chunk,) = chunk_files(rec, "tap_drops")
    pq.write_table(pq.read_table(chunk).drop(["netns"]), chunk)  # as a 1.0 recorder wrote it
    m = json.loads((rec / MANIFEST_NAME).read_text())
    (rec / MANIFEST_NAME).write_text(json.dumps({**m, "schema_version": "1.0"}))
    df = read_table(rec, "tap_drops")
    assert list(df.columns) == TABLES["tap_drops"].names
    assert list(zip(df["ifname"], df["netns"], strict=True)) == [("vnet0", "ns1"), ("tap0", "?"), ("gone0", "?")]
