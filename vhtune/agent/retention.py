"""Rolling-recording retention: whole segments (recording directories) are deleted oldest first until the
set fits both the size and the age budget. The segment being written is never touched."""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from vhtune.errors import UsageError
from vhtune.schema import MANIFEST_NAME

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.I)
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)
_SIZE_UNIT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_AGE_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"size {text!r} is not understood", "write it like 500M or 2G")
    return int(float(m.group(1)) * _SIZE_UNIT[m.group(2).upper()])


def parse_age(text: str) -> float:
    m = _AGE.match(text)
    if not m:
        raise UsageError(f"age {text!r} is not understood", "write it like 90m, 12h or 7d")
    return float(m.group(1)) * _AGE_UNIT[m.group(2).lower()]


@dataclass(frozen=True)
class Retention:
    max_bytes: int
    max_age_s: float


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def segments(root: Path) -> list[Path]:
    """Recording directories under root, oldest first (names are UTC timestamps, so they sort by time)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST_NAME).exists())


def enforce(root: Path, policy: Retention, current: Path | None, now: float | None = None) -> list[Path]:
    """Delete old segments; returns what was removed."""
    now = time.time() if now is None else now
    segs = [s for s in segments(root) if s != current]
    sizes = {s: _size(s) for s in segs}
    total = sum(sizes.values()) + (_size(current) if current and current.exists() else 0)
    removed = []
    for s in segs:  # oldest first
        too_old = now - s.stat().st_mtime > policy.max_age_s
        if not too_old and total <= policy.max_bytes:
            continue
        shutil.rmtree(s, ignore_errors=True)
        total -= sizes[s]
        removed.append(s)
    return removed
