"""What every report format says about a recording, as plain data (the JSON report is exactly this)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vhtune.cli.output import to_jsonable
from vhtune.detect.coverage import coverage

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.finding import Finding


def recording_facts(rec: Recording) -> dict[str, Any]:
    start, end = rec.span
    m = rec.manifest
    return {
        "path": str(rec.path),
        "host": m.get("host"),
        "vhtune_version": m.get("vhtune_version"),
        "schema_version": m.get("schema_version"),
        "complete": rec.complete,
        "stop_reason": m.get("stop_reason"),
        "interval_s": rec.interval_s,
        "intervals": rec.intervals,
        "start": start.isoformat() if start is not None else None,
        "end": end.isoformat() if end is not None else None,
        "lost_events": rec.lost_events,
        "damaged": list(rec.damaged),  # what --skip-damaged left out
        "capabilities": rec.capabilities,
        "backend_counters": rec.has_backend_counters,
        "environment": m.get("environment"),
    }


def path_table(rec: Recording) -> list[dict[str, Any]]:
    """One row per data path: mean rates over the recording."""
    pm = rec.path_metrics
    if not len(pm):
        return []
    g = pm.groupby(level="path")
    span = g["interval_s"].sum()
    rows = []
    for name in g.size().index:
        p = rec.topology.by_name(str(name))
        s = span[name] or 1.0
        sums = g.get_group(name).sum(numeric_only=True)
        pk = float(sums["packets"]) or float("nan")
        rows.append(
            {
                "path": str(name),
                "backend": f"{p.backend_kind} pid {p.backend_pid}"
                if p and p.backend_pid
                else (p.backend_kind if p else ""),
                "taps": ",".join(rec.topology.tap_refs(p)) if p else "",
                "pps": float(sums["packets"]) / s,
                "kicks_per_s": float(sums["kicks"]) / s,
                "calls_per_s": float(sums["calls"]) / s,
                "kicks_per_pkt": float(sums["kicks"]) / pk,
                "calls_per_pkt": float(sums["calls"]) / pk,
                "drops_per_s": float(sums["tap_drops"] + sums["no_rx_buffer_drops"]) / s,
                "backend_oncpu_pct": float(g.get_group(name)["backend_oncpu_pct"].mean()),
            }
        )
    return rows


def summary(rec: Recording, findings: list[Finding]) -> dict[str, Any]:
    return to_jsonable(
        {
            "recording": recording_facts(rec),
            "findings": [f.to_dict() for f in findings],
            "paths": path_table(rec),
            "drops_by_reason": rec.drops_by_reason.to_dict("records"),
            "not_judged": {k: v for k, v in coverage(rec).items() if v},
        }
    )
