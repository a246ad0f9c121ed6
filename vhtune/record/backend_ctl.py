"""Roles of eventfds from vhtune's own back-end: its control socket's ``queues`` reply names, per queue,
the kick/call fd numbers and the worker tid (vhtune/backend/control.py). The same eventfd held by a
front-end (another fd number in another process) is matched through fdinfo ``eventfd-id``.
"""

from __future__ import annotations

import stat
from pathlib import Path

from vhtune.backend.control_client import control_socket_of
from vhtune.discover.model import ROLE_BACKEND, Snapshot
from vhtune.errors import VhtuneError
from vhtune.probes.targets import ROLE_EVENTFD, FdTarget, TargetSet, ThreadTarget


def eventfd_id(pid: int, fd: int, proc: Path = Path("/proc")) -> int | None:
    try:
        for line in (proc / str(pid) / "fdinfo" / str(fd)).read_text().splitlines():
            if line.startswith("eventfd-id:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _comm(pid: int, tid: int) -> str:
    try:
        return Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return "?"


def control_targets(path: str) -> TargetSet:
    """Kick/call fds and worker threads of the back-end behind control socket ``path`` (empty if gone)."""
    from vhtune.backend.control_client import ControlClient

    ts = TargetSet()
    try:
        reply = ControlClient(path, timeout=2.0).call("queues")
    except VhtuneError:
        return ts  # not (or no longer) running: its targets are let go at this refresh
    pid = int(reply["pid"])
    for q in reply.get("queues", []):
        index = int(q["index"])
        for role, key in (("kick", "kick_fd"), ("call", "call_fd")):
            fd = q.get(key)
            if isinstance(fd, int) and fd >= 0:
                ts.add_fd(FdTarget(pid, fd, role, index, eventfd_id(pid, fd)))
        tid = q.get("tid")
        if isinstance(tid, int) and tid > 0:
            ts.add_thread(ThreadTarget(tid, pid, _comm(pid, tid), ROLE_BACKEND))
    return ts


def selected_controls(explicit: tuple[str, ...], snap: Snapshot | None, pids: tuple[int, ...]) -> list[str]:
    """``--control`` sockets plus those of the selected (or discovered) vhtune back-ends, each once."""
    return list(dict.fromkeys([*explicit, *discovered_controls(snap, pids)]))


def discovered_controls(snap: Snapshot | None, pids: tuple[int, ...] = ()) -> list[str]:
    """Control sockets of vhtune back-ends: the ``-p`` pids that are one, else every discovered one."""
    candidates = list(pids) or [b.pid for b in (snap.backends if snap else []) if b.kind == "vhtune"]
    out = []
    for pid in candidates:
        path = control_socket_of(pid)
        try:
            if path is not None and stat.S_ISSOCK(Path(path).stat().st_mode):
                out.append(path)
        except OSError:
            continue
    return out


def propagate_roles(ts: TargetSet) -> None:
    """Give every role-less eventfd the role/queue of a known fd on the same eventfd (same eventfd-id)."""
    known = {f.eventfd_id: f for f in ts.fds.values() if f.role != ROLE_EVENTFD and f.eventfd_id is not None}
    for key, f in list(ts.fds.items()):
        if f.role == ROLE_EVENTFD and f.eventfd_id in known:
            k = known[f.eventfd_id]
            ts.fds[key] = FdTarget(f.pid, f.fd, k.role, k.queue, f.eventfd_id)
