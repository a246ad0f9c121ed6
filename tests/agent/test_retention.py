from __future__ import annotations

import os
from pathlib import Path

import pytest

from vhtune.agent.retention import Retention, enforce, parse_age, parse_size, segments
from vhtune.errors import UsageError


def _segment(root: Path, name: str, size: int, mtime: float) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "manifest.json").write_text("{}")
    (d / "chunk.parquet").write_bytes(b"x" * size)
    os.utime(d, (mtime, mtime))
    return d


def test_parse_size_and_age() -> None:
    assert parse_size("2G") == 2 << 30 and parse_size("500M") == 500 << 20 and parse_size("1.5KiB") == 1536
    assert parse_age("7d") == 7 * 86400 and parse_age("90m") == 5400 and parse_age("30") == 30
    with pytest.raises(UsageError):
        parse_size("lots")
    with pytest.raises(UsageError):
        parse_age("-1d")


def test_oldest_segments_go_first_until_both_budgets_hold(tmp_path: Path) -> None:
    now = 1_000_000.0
    a = _segment(tmp_path, "20260101T000000Z", 1000, now - 10 * 86400)  # too old
    b = _segment(tmp_path, "20260102T000000Z", 1000, now - 3600)
    c = _segment(tmp_path, "20260103T000000Z", 1000, now - 60)
    cur = _segment(tmp_path, "20260104T000000Z", 1000, now)
    (tmp_path / "not-a-recording").mkdir()
    removed = enforce(tmp_path, Retention(max_bytes=3100, max_age_s=7 * 86400), current=cur, now=now)
    assert removed == [a]
    removed = enforce(tmp_path, Retention(max_bytes=2100, max_age_s=7 * 86400), current=cur, now=now)
    assert removed == [b]
    assert segments(tmp_path) == [c, cur]
    # The segment being written survives any budget.
    enforce(tmp_path, Retention(max_bytes=0, max_age_s=0), current=cur, now=now)
    assert segments(tmp_path) == [cur]
