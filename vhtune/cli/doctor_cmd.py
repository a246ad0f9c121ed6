"""`vhtune doctor`: what this host can do, each probe mechanism tested by loading it."""

from __future__ import annotations

import click

from vhtune.cli import cli
from vhtune.cli.output import console, emit_json, table
from vhtune.env.doctor import OK, WARN, run_doctor

_STYLE = {OK: "green", WARN: "yellow"}


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool) -> None:
    """Check kernel, tracefs, bcc, headers and probe mechanisms; exit 0 when recording is possible."""
    rep = run_doctor()
    if as_json:
        emit_json(rep)
    else:
        out = console()
        rows = [(f"[{_STYLE.get(c.status, 'red')}]{c.status}[/]", c.name, c.detail, c.fix) for c in rep.checks]
        out.print(table(f"vhtune doctor — kernel {rep.kernel}", ["status", "check", "found", "fix"], rows))
        verdict = "[green]recording possible[/]" if rep.recording_possible else "[red]recording NOT possible[/]"
        out.print(f"\n{verdict} ({rep.elapsed_s:.1f} s)")
    if not rep.recording_possible:
        ctx.exit(3)
