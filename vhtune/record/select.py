"""Which threads, taps and eventfds a recording watches, from a discovery snapshot and the command line.

- no ``-p`` and no ``--all``: the data path discovery found (vCPU, vhost worker, back-end worker threads, the
  data-path threads of non-VM front-ends such as a DPDK virtio-user lcore, every discovered tap, the eventfds
  of VMs, back-ends and front-ends);
- ``--all``: every thread of every discovered VM, back-end and front-end (main loops and iothreads too);
- ``-p PID``: every thread and eventfd of those processes (read from /proc even when discovery does not
  know them) and the taps they hold; ``--tap NAME`` adds every tap of that name (one per netns where the
  same name lives in several), ``--tap NETNS/NAME`` only the one in that netns; taps are keyed by
  (netns, name) throughout; ``--control PATH`` adds a vhtune
  back-end's worker threads and kick/call fds per queue (discovered vhtune back-ends' ``.ctl`` sockets are
  used without asking when no ``-p`` is given), and fds of other processes on the same eventfds get the
  same role and queue.
Extra targets with known roles (a back-end's kick/call fds per queue) come in through ``extra``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vhtune.discover.model import (
    ROLE_BACKEND,
    ROLE_FRONTEND,
    ROLE_OTHER,
    ROLE_VCPU,
    ROLE_VHOST_WORKER,
    Snapshot,
    TapInfo,
)
from vhtune.errors import DiscoveryError, UsageError, VhtuneError
from vhtune.probes.netdev import ROOT, read_counters
from vhtune.probes.targets import ROLE_EVENTFD, FdTarget, TapTarget, TargetSet, ThreadTarget
from vhtune.record.backend_ctl import control_targets, propagate_roles, selected_controls

# A front-end's lcore is on the path too: its on-CPU time and run-queue waits are the path's, and the detectors
# read them to know which CPUs it occupies.
DATA_PATH_ROLES = (ROLE_VCPU, ROLE_VHOST_WORKER, ROLE_BACKEND, ROLE_FRONTEND)


@dataclass
class Selection:
    pids: tuple[int, ...] = ()
    all: bool = False
    taps: tuple[str, ...] = ()
    controls: tuple[str, ...] = ()  # vhtune back-end control sockets (kick/call fds per queue, worker tids)
    extra: Callable[[], TargetSet] | None = None  # called at every refresh
    proc: Path = field(default=Path("/proc"))


def proc_threads(pid: int, proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    """(tid, comm) of every thread of ``pid``; [] when it is gone."""
    out = []
    try:
        tids = [int(t) for t in os.listdir(proc / str(pid) / "task")]
    except (FileNotFoundError, ProcessLookupError):
        return []
    except OSError as exc:
        raise DiscoveryError(f"cannot list the threads of pid {pid}: {exc.strerror}") from None
    for tid in sorted(tids):
        try:
            comm = (proc / str(pid) / "task" / str(tid) / "comm").read_text().strip()
        except OSError:
            continue  # exited meanwhile
        out.append((tid, comm))
    return out


def proc_eventfds(pid: int, proc: Path = Path("/proc")) -> list[tuple[int, int | None]]:
    """(fd, eventfd-id) of every eventfd ``pid`` holds (fd link ``anon_inode:[eventfd]``)."""
    out: list[tuple[int, int | None]] = []
    base = proc / str(pid)
    try:
        fds = os.listdir(base / "fd")
    except OSError:
        return []
    for name in fds:
        try:
            if os.readlink(base / "fd" / name) != "anon_inode:[eventfd]":
                continue
            eid = None
            for line in (base / "fdinfo" / name).read_text().splitlines():
                if line.startswith("eventfd-id:"):
                    eid = int(line.split()[1])
            out.append((int(name), eid))
        except (OSError, ValueError):
            continue
    return sorted(out)


def parse_tap_spec(spec: str) -> tuple[str | None, str]:
    """``--tap`` values: ``NAME`` (every discovered tap of that name, in whatever netns it lives) or
    ``NETNS/NAME`` (only the one in that netns: "root", a /run/netns name or "net:[inode]", as discovery
    labels them). Interface names cannot contain '/', so the last one splits."""
    netns, sep, name = spec.rpartition("/")
    if not sep:
        return None, spec
    if not netns or not name:
        raise UsageError(f"--tap {spec!r} is neither NAME nor NETNS/NAME", hint="e.g. --tap tap0 or --tap ns1/tap0")
    return netns, name


def _tap_owner(snap: Snapshot, tap: TapInfo) -> str | None:
    vms = {vm.pid: vm for vm in snap.vms}
    for pid in tap.owner_pids:
        if pid in vms:
            return vms[pid].name or f"pid {pid}"
    for vm in snap.vms:  # QEMU's -netdev tap,ifname=… names it even when another process holds the fd
        if any(n.ifname == tap.name for n in vm.netdevs):
            return vm.name or f"pid {vm.pid}"
    return None


def absent_taps(snap: Snapshot | None, sel: Selection) -> list[str]:
    """A sentence for each ``--tap`` that names no interface now: a typo, or a VM that has not started yet.
    Its rows stay 0 until the interface appears (re-discovery then picks it up); the name is still watched."""
    out = []
    for spec in sel.taps:
        netns, name = parse_tap_spec(spec)
        if snap and any(t.name == name and netns in (None, t.netns) for t in snap.taps):
            continue
        where = netns or ROOT
        try:
            if read_counters([(where, name)]):  # an interface nobody holds yet (`ip tuntap add` before the VM)
                continue
        except (VhtuneError, OSError):  # the netns cannot be read: the check is a courtesy, not a reason to stop
            continue
        out.append(
            f"--tap {spec}: there is no interface {name} in netns {where} now; its rows stay 0 until one appears "
            "(`vhtune discover` lists the taps)"
        )
    return out


def build(snap: Snapshot | None, sel: Selection) -> TargetSet:
    ts = TargetSet()
    roles = {t.tid: t.role for t in snap.threads} if snap else {}
    if sel.pids:
        for pid in sel.pids:
            for tid, comm in proc_threads(pid, sel.proc):
                ts.add_thread(ThreadTarget(tid, pid, comm, roles.get(tid, ROLE_OTHER)))
            for fd, eid in proc_eventfds(pid, sel.proc):
                ts.add_fd(FdTarget(pid, fd, ROLE_EVENTFD, None, eid))
        if snap:
            wanted = set(sel.pids)
            for tap in snap.taps:
                if wanted & set(tap.owner_pids):
                    ts.add_tap(TapTarget(tap.name, tap.ifindex, tap.netns, _tap_owner(snap, tap)))
    elif snap:
        owners = {vm.pid for vm in snap.vms} | {b.pid for b in snap.backends}
        owners |= {pid for b in snap.backends for pid in b.frontend_pids}
        for t in snap.threads:
            if t.role in DATA_PATH_ROLES or (sel.all and t.pid in owners):
                ts.add_thread(ThreadTarget(t.tid, t.pid, t.comm, t.role))
        for tap in snap.taps:
            ts.add_tap(TapTarget(tap.name, tap.ifindex, tap.netns, _tap_owner(snap, tap)))
        for e in snap.eventfds:
            if e.pid in owners:
                ts.add_fd(FdTarget(e.pid, e.fd, ROLE_EVENTFD, None, e.eventfd_id))
    for spec in sel.taps:
        netns, name = parse_tap_spec(spec)
        known = [t for t in snap.taps if t.name == name and netns in (None, t.netns)] if snap else []
        for tap in known:  # a bare name seen in several netns (one VM per netns, Kata): all of them
            ts.add_tap(TapTarget(tap.name, tap.ifindex, tap.netns, _tap_owner(snap, tap) if snap else None))
        if not known:  # not discovered (no holder found): looked for in the given netns, else vhtune's own
            ts.add_tap(TapTarget(name, None, netns or "?", None))
    controls = selected_controls(sel.controls, snap, sel.pids)
    extras = [control_targets(c) for c in controls]
    if sel.extra is not None:
        extras.append(sel.extra())
    for more in extras:
        for tid, tt in more.threads.items():
            ts.threads.setdefault(tid, tt)
        ts.taps.update(more.taps)
        ts.fds.update(more.fds)  # roles known to the back-end win over "eventfd"
    propagate_roles(ts)
    return ts
