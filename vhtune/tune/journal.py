"""The persisted record of every change: plans, and a write-ahead journal per plan.

Before a value is written, its old value is appended to the plan's journal and fsync'd, so a vhtune killed
mid-apply (SIGKILL, power loss) can still be rolled back exactly. Plans and journals live in the state dir
($VHTUNE_STATE_DIR, default /var/lib/vhtune/tune). Each journal line carries the boot id: values that do not
survive a reboot are not "restored" over a fresh boot's defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vhtune.errors import TuneError
from vhtune.fsutil import atomic_write

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def state_dir() -> Path:
    return Path(os.environ.get("VHTUNE_STATE_DIR", "/var/lib/vhtune")) / "tune"


def boot_id() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return "unknown"


def write_atomic(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data.encode())


class Journal:
    """Append-only JSON lines, one fsync per entry."""

    def __init__(self, plan_id: str, root: Path | None = None) -> None:
        self.path = (root or state_dir()) / "journal" / f"{plan_id}.jsonl"

    def append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({**entry, "boot_id": boot_id()}, sort_keys=True) + "\n"
        try:
            with open(self.path, "a") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise TuneError(
                f"cannot write the tuning journal {self.path}: {exc.strerror}", "check disk space"
            ) from None

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                # Only the last line can be torn (killed mid-write); everything before it was fsync'd.
                break
        return out

    def exists(self) -> bool:
        return self.path.exists()
