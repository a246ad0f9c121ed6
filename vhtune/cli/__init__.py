"""The ``vhtune`` command: a thin click layer over the library (parse → api → render).

Sub-command modules register themselves on ``cli``; expected failures (``VhtuneError``) become one clear
line on stderr and the error's exit code at this edge.
"""

from __future__ import annotations

import importlib
import sys

import click

from vhtune import __version__
from vhtune.errors import VhtuneError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vhtune")
def cli() -> None:
    """Observe and tune vhost networking: vhost-net and vhost-user back-ends, taps, kicks and irqfd."""


COMMAND_MODULES = (
    "agent_cmd",
    "analyze_cmd",
    "backend_cmd",
    "discover_cmd",
    "doctor_cmd",
    "lab_cmd",
    "record_cmd",
    "report_cmd",
    "tune_cmd",
)


def _register() -> None:
    # Each module adds its command(s) to ``cli`` when imported.
    for name in COMMAND_MODULES:
        importlib.import_module(f"vhtune.cli.{name}")


def main(argv: list[str] | None = None) -> None:
    _register()
    try:
        rc = cli.main(args=argv, prog_name="vhtune", standalone_mode=False)
    except VhtuneError as err:
        click.echo(f"vhtune: error: {err.message}", err=True)
        if err.hint:
            click.echo(f"vhtune: hint: {err.hint}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("vhtune: aborted", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    # standalone_mode=False hands back the code given to ctx.exit(); commands themselves return None.
    sys.exit(rc if isinstance(rc, int) else 0)
