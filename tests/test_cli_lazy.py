"""Commands load lazily: `vhtune backend` must not pay for pandas/pyarrow (the back-end's RSS budget)."""

from __future__ import annotations

import subprocess
import sys


def test_backend_help_does_not_import_the_analysis_stack() -> None:
    code = "import sys; from vhtune.cli import main; sys.argv=['vhtune','backend','--help']\n"
    code += "try:\n    main(['backend', '--help'])\nexcept SystemExit:\n    pass\n"
    code += "print(sorted(m for m in ('pandas', 'pyarrow', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_every_command_is_listed_and_loads() -> None:
    from vhtune.cli import COMMANDS, cli, main

    for name in COMMANDS:
        try:
            main([name, "--help"])
        except SystemExit as exc:
            assert exc.code == 0, name
        assert name in cli.commands, name
