"""Long fuzz run of the vhost-user message parser/state machine and the descriptor walker:
``python -m bench backend_fuzz [-- EXAMPLES]`` (default 5000 examples per target; the suite runs 150)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    examples = argv[0] if argv else "5000"
    env = {**os.environ, "VHTUNE_FUZZ_EXAMPLES": examples}
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/backend/test_fuzz.py"]
    return subprocess.run(cmd, cwd=root, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
