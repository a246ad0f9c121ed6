"""The ``vhtune`` command: a thin click layer over the library (parse → api → render).

Sub-command modules register themselves on ``cli``; expected failures (``VhtuneError``) become one clear
line on stderr and the error's exit code at this edge.
"""

from __future__ import annotations

import importlib
import select
import sys

import click

from vhtune import __version__
from vhtune.errors import VhtuneError

# Command name → the module that defines it. Modules are imported only when their command runs (or help lists
# them): `vhtune backend` then never loads pandas/pyarrow, which keeps the back-end's RSS small.
COMMANDS = {
    "agent": "agent_cmd",
    "analyze": "analyze_cmd",
    "backend": "backend_cmd",
    "bench": "bench_cmd",
    "discover": "discover_cmd",
    "doctor": "doctor_cmd",
    "lab": "lab_cmd",
    "record": "record_cmd",
    "report": "report_cmd",
    "tune": "tune_cmd",
}


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe or socket whose reader has closed (poll(2) reports POLLERR on its write end)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a StringIO (tests) or closed
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _fd, events in poller.poll(0))


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            # click ends any EPIPE with a silent exit 1. Right for `vhtune analyze | head`; but a peer socket
            # or child pipe that broke is a bug to see, with its traceback.
            if _stdout_reader_gone():
                raise
            raise RuntimeError(f"unexpected broken pipe (not stdout): {exc}") from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            # The module adds its command(s) to ``cli`` when imported.
            importlib.import_module(f"vhtune.cli.{COMMANDS[cmd_name]}")
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="vhtune")
def cli() -> None:
    """Observe and tune vhost networking: vhost-net and vhost-user back-ends, taps, kicks and irqfd."""


def main(argv: list[str] | None = None) -> None:
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
