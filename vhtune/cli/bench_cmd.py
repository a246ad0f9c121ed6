"""`vhtune bench`: the benchmarks of bench/ (each prints a ratio against an anchor measured in the same run).

They live in the source tree, not in the installed package: they start DPDK, QEMU and taps and compare against
other tools, which a production install has no use for. From a checkout (editable install, `make setup`) this
runs them; elsewhere it says where they are.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import click

from vhtune.cli import cli
from vhtune.errors import UsageError

_TREE = Path(__file__).resolve().parents[2]  # vhtune/cli/bench_cmd.py → the checkout holding vhtune/ and bench/


def _bench() -> ModuleType:
    if not (_TREE / "bench" / "__main__.py").is_file():
        raise UsageError(
            "the benchmarks ship with the source tree, not with an installed vhtune",
            hint="run them from a checkout: make bench, or .venv/bin/vhtune bench there",
        )
    if str(_TREE) not in sys.path:
        sys.path.insert(0, str(_TREE))
    return importlib.import_module("bench.__main__")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--list", "list_only", is_flag=True, help="List the benchmarks and exit.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def bench(ctx: click.Context, list_only: bool, args: tuple[str, ...]) -> None:
    """Run benchmarks: NAME… (backend, record, counters, analysis, lab; none: all), then their options.

    e.g. `vhtune bench record --seconds 3 --rounds 3`. Needs root and the lab's packages, like `make test`."""
    mod = _bench()
    if list_only:
        default, others = mod.available()
        click.echo("\n".join([*default, *(f"{n} (only when named)" for n in others)]))
        return
    cut = next((i for i, a in enumerate(args) if a.startswith("-")), len(args))  # NAME… then their options
    ctx.exit(int(mod.main([*args[:cut], "--", *args[cut:]]) or 0))
