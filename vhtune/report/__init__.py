"""Reports of a recording's findings: HTML (self-contained, plots inline), Markdown, JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from vhtune.errors import UsageError, VhtuneError

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.finding import Finding

FORMATS = ("html", "md", "json")


def render(rec: Recording, findings: list[Finding], fmt: str) -> str:
    if fmt == "html":
        from vhtune.report.html import render as html

        return html(rec, findings)
    if fmt == "md":
        from vhtune.report.markdown import render as md

        return md(rec, findings)
    if fmt == "json":
        from vhtune.report.summary import summary

        return json.dumps(summary(rec, findings), indent=2) + "\n"
    raise UsageError(f"unknown report format {fmt!r}", f"use one of {', '.join(FORMATS)}")


def write_report(rec: Recording, findings: list[Finding], path: Path | str, fmt: str = "html") -> Path:
    text = render(rec, findings, fmt)
    out = Path(path)
    try:
        out.write_text(text)
    except OSError as exc:
        raise VhtuneError(f"cannot write the report to {out}: {exc.strerror}", "choose a writable -o") from None
    return out
