"""The lab's naming scheme: every netns, link, socket and hugepage file the lab makes starts with ``PREFIX``.

``vhtune lab clean`` relies on it to find leftovers, and the pid in each name keeps parallel runs apart.
Linux interface names hold at most 15 characters (IFNAMSIZ 16 including the NUL).
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

from vhtune.errors import UsageError

PREFIX = "vhl"
IFNAMSIZ = 15
RUN_DIR = Path("/run/vhtune-lab")

_counter = itertools.count()
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def lab_name(kind: str, pid: int | None = None) -> str:
    """A unique name ``vhl<kind><pid>x<n>`` that fits an interface name (≤ 15 characters)."""
    # 3 + 2 + 7 (pid_max 4194304) + 1 + 2 = 15 characters at most.
    if not kind.isalpha() or not kind.islower() or len(kind) > 2:
        raise UsageError(f"lab name kind {kind!r} must be 1-2 lower-case letters")
    pid = os.getpid() if pid is None else pid
    return f"{PREFIX}{kind}{pid}x{next(_counter) % 100}"


def check_ifname(name: str) -> str:
    if not name or len(name) > IFNAMSIZ or not _NAME_RE.match(name) or name in (".", ".."):
        raise UsageError(
            f"interface name {name!r} is not valid",
            hint=f"use at most {IFNAMSIZ} characters from letters, digits, '_', '.', '-'",
        )
    return name


def pid_of(name: str) -> int | None:
    """The pid embedded in a lab name (``vhl<kind><pid>x<n>``), or None when it is not a lab name."""
    m = re.match(rf"^{PREFIX}[a-z]+(\d+)x\d+", name)
    return int(m.group(1)) if m else None


def run_dir() -> Path:
    """A root-only directory for the lab's sockets and consoles (created on demand)."""
    RUN_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    return RUN_DIR
