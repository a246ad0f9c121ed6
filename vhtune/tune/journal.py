"""The persisted record of every change: plans, and a write-ahead journal per plan.

Before a value is written, its old value is appended to the plan's journal and fsync'd, so a vhtune killed
mid-apply (SIGKILL, power loss) can still be rolled back exactly. Plans and journals live in the state dir
($VHTUNE_STATE_DIR, default /var/lib/vhtune/tune). Each journal line carries the boot id: values that do not
survive a reboot are not "restored" over a fresh boot's defaults.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vhtune.errors import TuneError
from vhtune.fsutil import atomic_write, fsync_dir, make_dir_durable

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
        self.plan_id = plan_id
        self.path = (root or state_dir()) / "journal" / f"{plan_id}.jsonl"

    def append(self, entry: dict[str, Any]) -> None:
        line = (json.dumps({**entry, "boot_id": boot_id()}, sort_keys=True) + "\n").encode()
        try:
            make_dir_durable(self.path.parent)  # a journal directory made here is fsync'd into its parent
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    # A torn last line (power loss, a full disk mid-write): start on a line of our own, or this
                    # entry would be glued to the fragment and lost with it.
                    line = b"\n" + line
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                # The new file's directory entry is data of the directory: without this, power loss can drop the
                # whole journal although its lines were fsync'd.
                fsync_dir(self.path.parent)
        except OSError as exc:
            raise TuneError(
                f"cannot write the tuning journal {self.path}: {exc.strerror}", "check disk space"
            ) from None

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                # A line torn by power loss or a full disk mid-write; the lines after it were written later.
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def exists(self) -> bool:
        return self.path.exists()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of this plan's journal for one apply or rollback; another vhtune is refused, not queued.

        flock(2) is released by the kernel when its holder dies, so a SIGKILLed vhtune never leaves it held.
        """
        lock_path = self.path.with_suffix(".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise TuneError(f"cannot open the journal lock {lock_path}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise TuneError(
                    f"plan {self.plan_id} is being applied or rolled back by another vhtune (pid {holder})",
                    "wait for it to finish, then check with `vhtune tune verify`",
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)
