"""`vhtune analyze DIR [--json]`: the recording's findings, most important first, as a compact table."""

from __future__ import annotations

from pathlib import Path

import click

from vhtune.cli import cli
from vhtune.cli.output import console, emit_json, table, warn_damaged


@cli.command("analyze")
@click.argument("directory", type=click.Path(path_type=Path, readable=False))
@click.option("--json", "as_json", is_flag=True, help="Findings and recording facts as JSON.")
@click.option("--only", multiple=True, metavar="ID", help="Run only this detector (repeatable).")
@click.option(
    "--skip-damaged", is_flag=True, help="Leave out chunks that cannot be read (say which) instead of refusing."
)
def analyze_cmd(directory: Path, as_json: bool, only: tuple[str, ...], skip_damaged: bool) -> None:
    """Find which hop limits each VM in a recording, with evidence and the exact change to make."""
    from vhtune import api
    from vhtune.errors import UsageError
    from vhtune.report.summary import summary

    known = {d.id for d in api.DETECTORS}
    bad = [o for o in only if o not in known]
    if bad:
        raise UsageError(f"unknown detector {bad[0]!r}", f"known: {', '.join(sorted(known))}")
    rec = api.load(directory, skip_damaged=skip_damaged)
    warn_damaged(rec.damaged)
    findings = api.analyze(rec, only)
    if as_json:
        emit_json(summary(rec, findings))
        return
    out = console()
    facts = f"{rec.intervals} intervals of {rec.interval_s:g} s, lost events {rec.lost_events}"
    if not rec.complete:
        facts += ", cut short (read up to its last flushed chunk)"
    if rec.intervals == 0:
        out.print(
            f"{directory}: holds no interval yet (the recorder stopped before its first flush); nothing to judge."
        )
        return
    gaps = {k: v for k, v in api.coverage(rec).items() if v}
    if not findings:
        out.print(f"{directory}: no bottleneck found ({facts}).")
        for k, v in gaps.items():
            out.print(f"  not judged: {k} ({v})")
        return
    rows = []
    for i, f in enumerate(findings, 1):
        top = f.recommendations[0] if f.recommendations else None
        rows.append(
            (
                i,
                f.id,
                f.subject,
                f.path,
                f.severity if not f.consequence_of else f"info ← {f.consequence_of}",
                f"{f.confidence:.2f}",
                f.evidence[0].short() if f.evidence else "",
                f"{top.knob}: {top.change()}" if top else "",
            )
        )
    t = table(
        f"{directory}: {len(findings)} finding(s); {facts}",
        ["#", "finding", "subject", "VM", "severity", "conf", "evidence", "top recommendation"],
        rows,
    )
    t.columns[1].no_wrap = True  # finding ids stay greppable
    out.print(t)
    out.print("\nCommands (first recommendation of each finding that is not a consequence):")
    for i, f in enumerate(findings, 1):
        if f.recommendations and not f.consequence_of:
            out.print(f"  {i}. {f.recommendations[0].command}", soft_wrap=True)
    if gaps:
        out.print("Not judged (inputs missing): " + ", ".join(f"{k} ({v})" for k, v in gaps.items()), soft_wrap=True)
    out.print("All evidence and ranked recommendations: vhtune report DIR -o report.html (or --json here).")
