"""The public surface of vhtune's analysis (notebooks, the CLI, ``vhtune tune auto`` and ``make demo`` use it).

>>> rec = load("/var/tmp/rec1")            # RecordingError (one sentence + hint) if it is not a recording
>>> findings = analyze(rec)                # ranked list[Finding]; [] on a healthy data path
>>> findings[0].id, findings[0].recommendations[0].command
>>> write_report(rec, findings, "report.html", "html")   # or "md", "json"
"""

from __future__ import annotations

from pathlib import Path

from vhtune.analysis.recording import Recording
from vhtune.analysis.recording import load as _load
from vhtune.detect import analyze as _analyze
from vhtune.detect.coverage import coverage as _coverage
from vhtune.detect.finding import Evidence, Finding, Recommendation
from vhtune.detect.measure import Measurement
from vhtune.detect.measure import measure as _measure
from vhtune.detect.table import DETECTORS, Detector
from vhtune.report import FORMATS
from vhtune.report import render as _render
from vhtune.report import write_report as _write_report

__all__ = [
    "DETECTORS",
    "FORMATS",
    "Detector",
    "Evidence",
    "Finding",
    "Measurement",
    "Recommendation",
    "Recording",
    "analyze",
    "coverage",
    "load",
    "measure",
    "render_report",
    "write_report",
]


def load(directory: Path | str, *, skip_damaged: bool = False) -> Recording:
    """A recording directory → Recording (frames per table, topology, derived metrics on access). With
    ``skip_damaged``, damaged chunks are left out and listed in ``Recording.damaged`` instead of refused."""
    return _load(directory, skip_damaged=skip_damaged)


def analyze(rec: Recording | Path | str, only: tuple[str, ...] = ()) -> list[Finding]:
    """Run every detector (or those in ``only``) → findings ranked most important first."""
    if not isinstance(rec, Recording):
        rec = _load(rec)
    return _analyze(rec, only)


def coverage(rec: Recording) -> dict[str, str | None]:
    """Detector id → None when the recording let it judge, else the sentence saying what it lacked."""
    return _coverage(rec)


def measure(rec: Recording, finding: Finding) -> Measurement:
    """The metric ``finding``'s fix should move, on ``rec`` (e.g. a recording made after applying it):
    ``before = measure(rec1, f); after = measure(rec2, f); before.improvement(after)`` → 0.3 = 30 % better."""
    return _measure(rec, finding)


def render_report(rec: Recording, findings: list[Finding], fmt: str = "html") -> str:
    return _render(rec, findings, fmt)


def write_report(rec: Recording, findings: list[Finding], path: Path | str, fmt: str = "html") -> Path:
    """Write the report (``html`` self-contained with plots, ``md`` or ``json``) to ``path``."""
    return _write_report(rec, findings, path, fmt)
