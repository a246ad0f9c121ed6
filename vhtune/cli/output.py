"""Rendering helpers shared by commands: JSON for machines, rich tables for people."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, sets and NaN become plain JSON values (NaN → null)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return to_jsonable(obj.item())
    return obj


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(to_jsonable(obj), indent=2, sort_keys=False))


def console() -> Console:
    # Piped output has no terminal width; rich would assume 80 columns and fold every table.
    width = shutil.get_terminal_size((140, 40)).columns
    return Console(highlight=False, soft_wrap=False, width=max(width, 100))


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


def warn_damaged(damaged: Sequence[str]) -> None:
    """What `--skip-damaged` left out of a recording, one warning line each on stderr (stdout stays the result)."""
    for sentence in damaged:
        click.echo(f"vhtune: warning: left out: {sentence}", err=True)
