"""``python -m vhtune.backend …``: the same command as ``vhtune backend`` without loading the other
sub-commands (the full CLI imports pandas/pyarrow, ≈ 80 MB of RSS the data path does not need)."""

from __future__ import annotations

import sys

import click

from vhtune.cli.backend_cmd import backend_cmd
from vhtune.errors import VhtuneError


def main(argv: list[str] | None = None) -> None:
    try:
        backend_cmd.main(args=argv, prog_name="vhtune backend", standalone_mode=False)
    except VhtuneError as err:
        click.echo(f"vhtune: error: {err.message}", err=True)
        if err.hint:
            click.echo(f"vhtune: hint: {err.hint}", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, click.exceptions.Abort):
        sys.exit(130)


if __name__ == "__main__":
    main()
