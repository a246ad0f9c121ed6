"""tracefs: where it is, mounting it, and which tracepoints this kernel has.

Since Linux 4.1 tracefs is its own filesystem, normally at /sys/kernel/tracing (and also reachable through
/sys/kernel/debug/tracing when debugfs is mounted). bcc resolves tracepoint ids through it, so nothing
tracepoint-based attaches while it is unmounted.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from vhtune.errors import CapabilityError

TRACEFS_CANDIDATES = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
MOUNT_HINT = "mount it with: mount -t tracefs nodev /sys/kernel/tracing (or run `make setup`)"


def tracefs_root() -> Path | None:
    """The mounted tracefs directory, or None."""
    for cand in TRACEFS_CANDIDATES:
        if (cand / "events").is_dir():
            return cand
    return None


def ensure_tracefs() -> Path:
    """Return the tracefs root, mounting it at /sys/kernel/tracing when root and it is missing."""
    root = tracefs_root()
    if root is not None:
        return root
    if os.geteuid() != 0:
        raise CapabilityError("tracefs is not mounted and mounting it needs root", MOUNT_HINT)
    proc = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(TRACEFS_CANDIDATES[0])],
        capture_output=True,
        text=True,
        check=False,
    )
    root = tracefs_root()
    if root is None:
        raise CapabilityError(f"tracefs could not be mounted: {proc.stderr.strip() or 'unknown'}", MOUNT_HINT)
    return root


def tracepoint_exists(category: str, name: str, root: Path | None = None) -> bool:
    base = root or tracefs_root()
    return base is not None and (base / "events" / category / name / "id").exists()


def tracepoint_fields(category: str, name: str, root: Path | None = None) -> list[str]:
    """Field names of a tracepoint from its format file (the running kernel's layout, not the headers')."""
    base = root or tracefs_root()
    if base is None:
        raise CapabilityError("tracefs is not mounted", MOUNT_HINT)
    fmt = base / "events" / category / name / "format"
    fields: list[str] = []
    for line in fmt.read_text().splitlines():
        line = line.strip()
        if not line.startswith("field:"):
            continue
        decl = line.split(";", 1)[0].removeprefix("field:").strip()
        ident = decl.split()[-1].split("[", 1)[0]
        if not ident.startswith("common_"):
            fields.append(ident)
    return fields
