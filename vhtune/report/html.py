"""One self-contained HTML file: inline CSS, plots as base64 PNG <img>, no scripts, no external resources."""

from __future__ import annotations

import base64
import json
from html import escape
from typing import TYPE_CHECKING, Any

from vhtune.detect.coverage import coverage
from vhtune.report.plots import render_all
from vhtune.report.summary import path_table, recording_facts

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.finding import Finding

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1150px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f3f3f3}.critical{background:#f8d0d0}.warning{background:#fbecc4}.info{background:#e6eef8}
.finding{border:1px solid #ccc;border-radius:6px;padding:8px 14px;margin:12px 0}
code,pre{background:#f6f6f6;font-size:12px}pre{padding:6px;white-space:pre-wrap}
.plot{margin:10px 0}.muted{color:#777}
"""


def _e(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, dict | list):
        return escape(json.dumps(v))
    return escape("" if v is None else str(v))


def _table(cols: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _finding(i: int, f: Finding) -> str:
    ev = "".join(
        f"<li>{escape(e.sentence())}"
        + (f" <span class='muted'>(threshold: {escape(e.source)})</span>" if e.source != "context" else "")
        + "</li>"
        for e in f.evidence
    )
    recs = "".join(
        f"<li><b>{escape(r.knob)}</b> {escape(r.target)}: {escape(r.change())}"
        f"<pre>{escape(r.command)}</pre>"
        + (f"<pre>{escape(r.tune_set)}</pre>" if r.tune_set else "")
        + f"expected: {escape(r.expected)}<br>risk: {escape(r.risk)}<br>"
        + f"rollback: <code>{escape(r.rollback)}</code></li>"
        for r in f.recommendations
    )
    cons = f" — consequence of <code>{escape(f.consequence_of)}</code>" if f.consequence_of else ""
    return (
        f"<div class='finding {escape(f.severity)}' id='finding-{i}'>"
        f"<h3>{i}. <code>{escape(f.id)}</code> on {escape(f.subject)} ({escape(f.path or '?')}) — "
        f"{escape(f.severity)}, confidence {f.confidence:.2f}{cons}</h3>"
        f"<p>{escape(f.explanation)}</p><p class='muted'>{escape(f.span[0] or '')} → {escape(f.span[1] or '')}</p>"
        f"<b>Evidence</b><ul>{ev}</ul><b>Recommendations</b><ol>{recs}</ol></div>"
    )


def render(rec: Recording, findings: list[Finding]) -> str:
    facts = recording_facts(rec)
    plots = render_all(rec, findings)
    imgs = "".join(
        f"<div class='plot'><img alt='{escape(name)}' id='plot-{escape(name)}' "
        f"src='data:image/png;base64,{base64.b64encode(png).decode()}'></div>"
        for name, png in plots.items()
    )
    ranked = _table(
        ["#", "finding", "subject", "VM", "severity", "confidence", "top recommendation"],
        [
            [
                i,
                f.id,
                f.subject,
                f.path,
                f.severity,
                f.confidence,
                f.recommendations[0].command if f.recommendations else "",
            ]
            for i, f in enumerate(findings, 1)
        ],
    )
    paths = path_table(rec)
    ptab = _table(
        ["VM", "back-end", "taps", "pps", "kicks/pkt", "calls/pkt", "drops/s", "back-end on-CPU %"],
        [
            [
                p["path"],
                p["backend"],
                p["taps"],
                p["pps"],
                p["kicks_per_pkt"],
                p["calls_per_pkt"],
                p["drops_per_s"],
                p["backend_oncpu_pct"],
            ]
            for p in paths
        ],
    )
    caps = rec.capabilities
    cap_rows = [[k, v] for k, v in (caps.get("families") or {}).items()] + [
        [f"variant {k}", v] for k, v in (caps.get("variants") or {}).items()
    ]
    d = rec.drops_by_reason
    drops = _table(list(d.columns), d.head(20).to_numpy().tolist()) if len(d) else "<p>none</p>"
    gaps = [[k, v] for k, v in coverage(rec).items() if v]
    gap_html = (
        "<h2>Not judged</h2><p>These detectors lacked inputs in this recording; no finding from them means nothing."
        f"</p>{_table(['detector', 'missing'], gaps)}"
        if gaps
        else ""
    )
    status = "complete" if facts["complete"] else "cut short (read up to its last flushed chunk)"
    verdict = (
        "<p><b>The recording holds no interval</b> (the recorder stopped before its first flush).</p>"
        if rec.intervals == 0
        else f"<p><b>{len(findings)}</b> finding(s); top: <code>{escape(findings[0].id)}</code> on "
        f"{escape(findings[0].subject)}</p>"
        if findings
        else "<p><b>No bottleneck found</b>: every detector stayed below its thresholds.</p>"
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>vhtune report</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>vhtune report — {escape(str(rec.path))}</h1>"
        f"<p>{escape(str(facts['start']))} → {escape(str(facts['end']))}, {facts['intervals']} intervals of "
        f"{facts['interval_s']:g} s, {status}. Lost events: <b id='lost'>{facts['lost_events']}</b>. "
        f"Back-end counters: {'yes' if facts['backend_counters'] else 'no'}.</p>"
        + "".join(f"<p class='damaged'><b>Left out (damaged):</b> {escape(d)}</p>" for d in facts["damaged"])
        + f"<h2>Findings</h2>{verdict}{ranked}"
        + "".join(_finding(i, f) for i, f in enumerate(findings, 1))
        + gap_html
        + f"<h2>Data paths</h2>{ptab}<h2>Plots</h2>{imgs}<h2>Drops by reason</h2>{drops}"
        f"<h2>Capabilities</h2>{_table(['probe family', 'mechanism'], cap_rows)}"
        "</body></html>\n"
    )
