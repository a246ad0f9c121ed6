"""Bottleneck detectors: a declarative table (vhtune/detect/table.py) evaluated over a Recording → ranked findings.

Ranking: a finding explained by another on the same data path (the table's ``supersedes``) becomes a
consequence (severity info, ranked last); the rest sort by severity, then the detector's priority, then score.
A finding whose own evidence is its cause (``self_explained``: a tap queue too short for any reader) stays a
root finding whatever else the path shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vhtune.detect.finding import Evidence, Finding, Recommendation, severity_rank
from vhtune.errors import VhtuneError

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording

__all__ = ["Evidence", "Finding", "Recommendation", "analyze", "rank"]


def analyze(rec: Recording, only: tuple[str, ...] = ()) -> list[Finding]:
    from vhtune.detect.table import DETECTORS

    found: list[Finding] = []
    for det in DETECTORS:
        if only and det.id not in only:
            continue
        try:
            found.extend(det.evaluate(rec, det))
        except (KeyError, ValueError, TypeError, ZeroDivisionError) as exc:
            raise VhtuneError(f"detector {det.id} failed on {rec.path}: {exc!r}") from exc
    return rank(found)


def rank(findings: list[Finding]) -> list[Finding]:
    from vhtune.detect.table import BY_ID

    for f in findings:
        for g in findings:
            if g is f or not f.path or g.path != f.path or g.consequence_of or f.self_explained:
                continue
            if f.id in BY_ID[g.id].supersedes and f.id not in BY_ID[f.id].supersedes:
                f.consequence_of = g.id
                f.severity = "info"
                break
    return sorted(
        findings,
        key=lambda f: (
            f.consequence_of is None,
            severity_rank(f.severity),
            BY_ID[f.id].priority,
            f.score,
        ),
        reverse=True,
    )
