"""Shared arithmetic of detectors: does a per-interval series cross a threshold persistently, how confident is
that, and how severe. A finding needs the threshold crossed in at least ``MIN_SHARE`` of the recording's
intervals (and at least ``MIN_INTERVALS`` of them), so one noisy interval never produces a finding."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from vhtune.detect.finding import Evidence, Finding, Threshold, severity_rank

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.table import Detector

MIN_SHARE = 0.2
MIN_INTERVALS = 2


def iso(ts: object) -> str | None:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return None
    return pd.Timestamp(ts).isoformat()  # type: ignore[arg-type]


def crossing(series: pd.Series, th: Threshold, total: int, note: str = "") -> Evidence | None:
    """Evidence when ``series`` (one value per interval, time index) crosses ``th`` persistently."""
    s = series.dropna()
    if not len(s) or total <= 0:
        return None
    hit = s[s >= th.value] if th.op == ">=" else s[s <= th.value]
    need = min(MIN_INTERVALS, total)
    if len(hit) < need or len(hit) / total < MIN_SHARE:
        return None
    return Evidence(
        metric=th.metric,
        value=float(hit.median()),
        threshold=th.value,
        op=th.op,
        unit=th.unit,
        source=th.source,
        share=len(hit) / total,
        intervals=len(hit),
        first=iso(hit.index.min()),
        last=iso(hit.index.max()),
        note=note,
    )


def context(metric: str, value: float | None, unit: str, note: str = "") -> Evidence:
    """A supporting value shown with the evidence (not a threshold of its own); ``value`` None for a fact that
    is only its note."""
    return Evidence(metric, value, float("nan"), "=", unit, "context", 1.0, 0, note=note)


def magnitude(ev: Evidence) -> float:
    """How far past its threshold the evidence is (≥ 1)."""
    if ev.value is None or not ev.threshold:
        return 1.0
    r = ev.value / ev.threshold if ev.op == ">=" else (ev.threshold / ev.value if ev.value > 0 else 16.0)
    return max(1.0, min(r, 16.0))


def severity(ev: Evidence) -> str:
    return "critical" if ev.share >= 0.5 and magnitude(ev) >= 2.0 else "warning"


def confidence(rec: Recording, ev: Evidence, quality: float = 1.0) -> float:
    """0..1: persistence of the crossing, times data quality (fallback inputs, lost events, short recordings)."""
    c = min(1.0, 0.5 + ev.share / 2 + (0.1 if magnitude(ev) >= 2 else 0.0))
    if rec.lost_events > 0:
        c *= 0.9
    if rec.intervals < 5:
        c *= 0.7
    return round(c * quality, 2)


def rate(g: pd.DataFrame, col: str) -> float:
    """``col`` per second over the rows of ``g``: sum(count) / sum(interval_s), not a mean of per-interval rates
    (a stretched interval would weigh as much as a normal one)."""
    seconds = float(g["interval_s"].sum())
    return float(g[col].sum()) / seconds if seconds > 0 else float("nan")


def score(sev: str, conf: float, ev: Evidence) -> float:
    return round((1 + severity_rank(sev)) * conf * (1 + math.log2(magnitude(ev))) * ev.share, 3)


def found(
    rec: Recording,
    det: Detector,
    ev: Evidence,
    *,
    subject: str,
    subject_kind: str,
    path: str,
    details: dict[str, Any],
    quality: float = 1.0,
    sev: str | None = None,
    context_evidence: tuple[Evidence, ...] = (),
    self_explained: bool = False,
) -> Finding:
    """A finding of ``det`` whose primary evidence is ``ev``: its span, confidence and score (and severity,
    unless ``sev`` fixes it) follow from ``ev``; ``context_evidence`` is shown after it and never scored."""
    sev = sev or severity(ev)
    conf = confidence(rec, ev, quality)
    return Finding(
        id=det.id,
        title=det.title,
        subject=subject,
        subject_kind=subject_kind,
        path=path,
        severity=sev,
        confidence=conf,
        explanation=det.explanation,
        evidence=[ev, *context_evidence],
        span=(ev.first, ev.last),
        score=score(sev, conf, ev),
        details=details,
        self_explained=self_explained,
    )
