"""Markdown report: the same content as the HTML one, without plots (text tables and command blocks)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vhtune.detect.coverage import coverage
from vhtune.report.summary import path_table, recording_facts

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.finding import Finding


def _c(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v).replace("|", "\\|")


def _table(cols: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_c(v) for v in r) + " |" for r in rows]
    return out


def render(rec: Recording, findings: list[Finding]) -> str:
    f0 = recording_facts(rec)
    lines = [
        f"# vhtune report — {rec.path}",
        "",
        f"{f0['start']} → {f0['end']}, {f0['intervals']} intervals of {f0['interval_s']:g} s, "
        f"{'complete' if f0['complete'] else 'cut short'}; lost events: {f0['lost_events']}; "
        f"back-end counters: {'yes' if f0['backend_counters'] else 'no'}.",
        "",
        *[f"**Left out (damaged):** {d}  " for d in f0["damaged"]],  # two spaces: a Markdown line break
        *([""] if f0["damaged"] else []),
        "## Findings",
        "",
    ]
    if not findings:
        lines += ["No bottleneck found: every detector stayed below its thresholds.", ""]
    lines += _table(
        ["#", "finding", "subject", "VM", "severity", "confidence"],
        [[i, f"`{f.id}`", f.subject, f.path, f.severity, f.confidence] for i, f in enumerate(findings, 1)],
    )
    for i, f in enumerate(findings, 1):
        lines += ["", f"### {i}. `{f.id}` on {f.subject} ({f.path}) — {f.severity}, confidence {f.confidence:.2f}"]
        if f.consequence_of:
            lines.append(f"Consequence of `{f.consequence_of}`.")
        lines += ["", f.explanation, "", "Evidence:"]
        lines += [f"- {e.sentence()} ({e.source})" for e in f.evidence]
        lines += ["", "Recommendations:"]
        for r in f.recommendations:
            lines += [
                f"{r.rank}. **{r.knob}** {r.target}: {r.change()} — {r.expected}; risk: {r.risk}",
                "",
                "   ```",
                f"   {r.command}",
                *([f"   {r.tune_set}"] if r.tune_set else []),
                "   ```",
                f"   rollback: `{r.rollback}`",
            ]
    gaps = [[k, v] for k, v in coverage(rec).items() if v]
    if gaps:
        lines += ["", "## Not judged (inputs missing from this recording)", ""]
        lines += _table(["detector", "missing"], gaps)
    lines += ["", "## Data paths", ""]
    lines += _table(
        ["VM", "back-end", "taps", "pps", "kicks/pkt", "calls/pkt", "drops/s"],
        [
            [p["path"], p["backend"], p["taps"], p["pps"], p["kicks_per_pkt"], p["calls_per_pkt"], p["drops_per_s"]]
            for p in path_table(rec)
        ],
    )
    caps = rec.capabilities
    lines += ["", "## Capabilities", ""]
    lines += [f"- {k}: {v}" for k, v in {**(caps.get("families") or {}), **(caps.get("variants") or {})}.items()]
    return "\n".join(lines) + "\n"
