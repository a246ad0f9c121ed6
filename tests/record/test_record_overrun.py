"""The interval clock after the loop fell behind (a flush that took longer than an interval: a slow disk)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.record.conftest import RecorderThread
from vhtune.record import read_table
from vhtune.record.recorder import Recorder, RecordOptions
from vhtune.record.select import Selection
from vhtune.record.writer import RecordingWriter

INTERVAL = 0.3


def test_a_stall_longer_than_an_interval_does_not_make_slivers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require_root: None
) -> None:
    # Catching up on missed boundaries would emit back-to-back intervals a few ms long, whose on-CPU %, pps and
    # run-queue quantiles are noise. The boundaries a stall skipped are dropped instead: every interval but the
    # last (cut by --duration) is at least half the interval long (0.4 here: the clock reads around the wait).
    flush = RecordingWriter.flush
    calls = {"n": 0}

    def slow_third_flush(self: RecordingWriter) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            time.sleep(2.5 * INTERVAL)
        flush(self)

    monkeypatch.setattr(RecordingWriter, "flush", slow_third_flush)
    out = tmp_path / "rec"
    sel = Selection(pids=(os.getpid(),))
    opts = RecordOptions(out, sel, interval=INTERVAL, duration=12 * INTERVAL, flush_every=1, refresh_s=60.0)
    th = RecorderThread(Recorder(opts), out)
    th.start_attached()
    th.join()
    assert "error" not in th.result, th.result
    assert calls["n"] >= 4
    threads = read_table(out, "threads")  # this process's threads: rows every interval
    lengths = threads.groupby("ts")["interval_s"].first().sort_index().tolist()
    assert max(lengths[:-1]) >= 2.5 * INTERVAL  # the stall is in one interval, measured
    assert min(lengths[:-1]) >= 0.4 * INTERVAL, lengths
