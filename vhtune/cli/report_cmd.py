"""`vhtune report DIR -o FILE [--format html|md|json]`: the findings, evidence, plots and commands in one file."""

from __future__ import annotations

from pathlib import Path

import click

from vhtune.cli import cli
from vhtune.cli.output import warn_damaged
from vhtune.report import FORMATS


@cli.command("report")
@click.argument("directory", type=click.Path(path_type=Path, readable=False))
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), required=True, help="File to write.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Default: from -o's suffix, else html.")
@click.option(
    "--skip-damaged", is_flag=True, help="Leave out chunks that cannot be read (say which) instead of refusing."
)
def report_cmd(directory: Path, output: Path, fmt: str | None, skip_damaged: bool) -> None:
    """Write a report of a recording (HTML is self-contained, with plots)."""
    from vhtune import api

    if fmt is None:
        suffix = output.suffix.lstrip(".").lower()
        fmt = (
            {"htm": "html", "markdown": "md"}.get(suffix, suffix) if suffix in (*FORMATS, "htm", "markdown") else "html"
        )
    rec = api.load(directory, skip_damaged=skip_damaged)
    warn_damaged(rec.damaged)
    findings = api.analyze(rec)
    path = api.write_report(rec, findings, output, fmt)
    click.echo(f"{path}: {fmt} report, {len(findings)} finding(s)" + (f"; top: {findings[0].id}" if findings else ""))
