"""Ranking: ``supersedes`` demotes an explained finding to a consequence, except one whose own evidence is its
cause (a tap queue shorter than any burst: seen on tap-rx while other tests' busy loops shared the back-end's CPU)."""

from __future__ import annotations

from vhtune.detect import rank
from vhtune.detect.finding import Evidence, Finding


def _finding(fid: str, severity: str, *, self_explained: bool = False) -> Finding:
    ev = Evidence("m", 1.0, 0.5, ">=", "", "test", 0.5, 4)
    return Finding(fid, fid, fid, "path", "vm0", severity, 1.0, "", [ev], self_explained=self_explained)


def test_contention_explains_drops_of_an_adequate_queue() -> None:
    drops, busy = _finding("tap-drops", "critical"), _finding("backend-cpu-contention", "warning")
    assert [f.id for f in rank([drops, busy])] == ["backend-cpu-contention", "tap-drops"]
    assert drops.consequence_of == "backend-cpu-contention" and drops.severity == "info"


def test_a_too_short_tap_queue_stays_a_root_finding() -> None:
    drops = _finding("tap-drops", "critical", self_explained=True)
    busy = _finding("backend-cpu-contention", "warning")
    assert [f.id for f in rank([busy, drops])] == ["tap-drops", "backend-cpu-contention"]
    assert drops.consequence_of is None and drops.severity == "critical"
