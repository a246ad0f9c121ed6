"""Leftover detection and ``vhtune lab clean``: everything is found by the lab's naming prefix only.

A leftover belongs to a dead lab run when the pid embedded in its name (``vhl<kind><pid>x<n>``) is gone, or now
belongs to a process that started after the leftover was made (a reused pid); those of live runs (other tests on
the same host) are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from vhtune.lab.names import PREFIX, RUN_DIR, pid_of
from vhtune.lab.netns import NETNS_DIR, delete_link, link_names, list_netns
from vhtune.lab.proc import run

HUGEPAGES = Path("/dev/hugepages")
# DPDK (run as root) keeps its per---file-prefix runtime dir (config, fbarrays, mp socket) here after it quits.
DPDK_RUNTIME = Path("/var/run/dpdk")
SYS_NET = Path("/sys/class/net")


def _lab(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith(PREFIX)]


def _run_files() -> list[str]:
    if not RUN_DIR.is_dir():
        return []
    return sorted(p.name for p in RUN_DIR.iterdir() if p.name.startswith(PREFIX))


def _hugepage_files() -> list[str]:
    if not HUGEPAGES.is_dir():
        return []
    return sorted(p.name for p in HUGEPAGES.iterdir() if p.name.startswith(PREFIX))


def _dpdk_dirs() -> list[str]:
    if not DPDK_RUNTIME.is_dir():
        return []
    return sorted(p.name for p in DPDK_RUNTIME.iterdir() if p.name.startswith(PREFIX))


def lab_processes() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info.get("cmdline") or []
        if any(PREFIX in a for a in cmd[1:]) and p.pid != os.getpid():
            out.append(p)
    return out


def snapshot(pid: int, own_only: bool = False) -> dict[str, list[str]]:
    """What the lab has on this host now, plus the live descendants of ``pid`` (for before/after checks).
    ``own_only`` keeps only names carrying ``pid`` (other lab runs on the host are none of our business)."""
    children = []
    with contextlib.suppress(psutil.NoSuchProcess):
        children = [f"{c.pid}:{c.name()}" for c in psutil.Process(pid).children(recursive=True)]

    def mine(names: list[str]) -> list[str]:
        return [n for n in names if not own_only or pid_of(n) == pid]

    return {
        "netns": mine(_lab(list_netns())),
        "links": mine(_lab(link_names())),
        "run_files": mine(_run_files()),
        "hugepages": mine(_hugepage_files()),
        "dpdk_runtime": mine(_dpdk_dirs()),
        "children": children,
    }


# Leftovers' mtimes and process start times are both wall-clock but not exact (nsfs keeps whole seconds,
# psutil's start time rests on /proc/stat's btime): a pid counts as reused only beyond this margin.
REUSE_SLACK_S = 5.0


def _owner_alive(pid: int, made: float | None) -> bool:
    """Whether the lab run ``pid`` still lives. ``made``: when its leftover was made (or last changed). A process
    that holds the pid but started after that got the pid from the kernel again (pid_max is 32768 here): the
    run is dead. So is a zombie."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        started = proc.create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return made is None or started <= made + REUSE_SLACK_S


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _dead(name: str, path: Path | None = None) -> bool:
    """``path``: where the leftover lives (a netns's nsfs mount, a link's sysfs dir, a file), for its mtime."""
    pid = pid_of(name)
    return pid is not None and not _owner_alive(pid, _mtime(path) if path is not None else None)


@dataclass
class CleanReport:
    processes: list[int] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    kept_live: list[str] = field(default_factory=list)


def clean(dry_run: bool = False) -> CleanReport:
    """Remove leftovers of dead lab runs: processes, netns, root links, run-dir files, hugepage files, DPDK
    runtime dirs."""
    rep = CleanReport()
    for p in lab_processes():
        cmd = " ".join(p.info.get("cmdline") or [])
        owners = [pid_of(w) for w in cmd.replace(",", " ").replace("=", " ").replace("/", " ").split()]
        owners_known = [o for o in owners if o is not None]
        try:
            started: float | None = p.create_time()
        except psutil.Error:
            started = None
        if owners_known and all(not _owner_alive(o, started) for o in owners_known):
            rep.processes.append(p.pid)
            if not dry_run:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    p.send_signal(signal.SIGKILL)
    for ns in _lab(list_netns()):
        if _dead(ns, NETNS_DIR / ns):
            rep.netns.append(ns)
            if not dry_run:
                run(["ip", "netns", "del", ns], check=False)
        else:
            rep.kept_live.append(ns)
    for link in _lab(link_names()):
        if _dead(link, SYS_NET / link):
            rep.links.append(link)
            if not dry_run:
                delete_link(link)
        else:
            rep.kept_live.append(link)
    for base, names in ((RUN_DIR, _run_files()), (HUGEPAGES, _hugepage_files()), (DPDK_RUNTIME, _dpdk_dirs())):
        for name in names:
            if _dead(name, base / name):
                rep.files.append(str(base / name))
                if not dry_run:
                    path = base / name
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
            else:
                rep.kept_live.append(name)
    return rep
