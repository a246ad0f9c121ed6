"""Early pick-up of new queues: a vhost-user back-end receives its kick/call eventfds (SCM_RIGHTS on
SET_VRING_KICK / SET_VRING_CALL) when a front-end connects, and the front-end starts kicking right after
ENABLE. Waiting for the periodic re-discovery (every few seconds) would miss the start of the connection, so
between re-discoveries the recorder lists the fd directories of the processes it watches (one getdents
each, no readlink) and re-discovers as soon as one of them holds a file descriptor it did not hold before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CHECK_EVERY_S = 0.25  # how often the fd directories are listed while the recorder waits for an interval


class FdTableWatch:
    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = proc
        self.last: dict[int, frozenset[str]] = {}

    def grew(self, pids: Iterable[int]) -> bool:
        """Whether any of ``pids`` opened (or received) a file descriptor since the previous call. A process
        seen for the first time sets its baseline and does not count as grown."""
        now: dict[int, frozenset[str]] = {}
        grew = False
        for pid in set(pids):
            try:
                fds = frozenset(os.listdir(self.proc / str(pid) / "fd"))
            except OSError:
                continue  # exited, or not ours to read: the periodic re-discovery lets it go
            now[pid] = fds
            old = self.last.get(pid)
            if old is not None and not fds <= old:
                grew = True
        self.last = now
        return grew
