"""cgroup-cpuset: the CPUs of the cpuset cgroup a discovered VM, back-end, vhost or vCPU task runs in.

libvirt and systemd put each VM in cgroups (machine.slice/…/libvirt/vcpuN, …/emulator) and an operator pins
vCPUs and emulator threads by writing cpuset.cpus there. That cgroup bounds sched_setaffinity(2): a mask
outside the cgroup's effective CPUs fails with EINVAL, and a later cpuset.cpus write overrides the task's
affinity again (measured on 6.18: shrinking cpuset.cpus migrates every task in it to the new CPUs; the mask a
task asked for with sched_setaffinity is kept and re-applied where it still intersects).

Target ident {"pid": N} or {"tid": N} (or both): the cpuset cgroup of that task, from
/proc/PID/task/TID/cgroup and the mount table (/proc/self/mountinfo), never a hard-coded path.
- cgroup v1 (line "3:cpuset:/path"; mount type cgroup with the cpuset super option): <mnt>/<path>/cpuset.cpus
  (just "cpus" when mounted with noprefix), effective CPUs in cpuset.effective_cpus.
- cgroup v2 (line "0::/path"; mount type cgroup2): <mnt>/<path>/cpuset.cpus, which exists only when the parent's
  cgroup.subtree_control enables cpuset; effective CPUs in cpuset.cpus.effective.
A v1 cpuset mount wins when both exist (a controller is bound to one hierarchy at a time: hybrid hosts like
this one mount cgroup2 without cpuset). Value: a CPU list, [] meaning empty. Runtime only: cgroupfs is rebuilt
at boot, so nothing survives a reboot.
"""

from __future__ import annotations

import errno
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from vhtune.cpulist import format_cpulist
from vhtune.errors import TuneError
from vhtune.tune.knob import Knob, Target, Value, parse_cpulist

PROC_ROOT = Path("/proc")  # seam: unit tests point it at a fake /proc with a fake mountinfo and cgroup files

_HINT_OWN_CGROUP = (
    "put the VM or back-end in a cpuset cgroup of its own (libvirt and systemd do), or use thread-affinity"
)


@dataclass(frozen=True)
class Mount:
    root: str  # the hierarchy path mounted there (field 4 of mountinfo; "/" unless bind-mounted or in a container)
    point: Path
    version: int  # 1 or 2
    prefix: str  # file name prefix: "cpuset." ("" on a v1 mount with the noprefix option)


@dataclass(frozen=True)
class CpusetCgroup:
    """One cpuset cgroup: its hierarchy path (as /proc/PID/cgroup names it) and its directory."""

    version: int
    path: str  # e.g. "/machine.slice/machine-qemu\x2d1\x2dvm0.scope/libvirt/vcpu0"
    dir: Path
    prefix: str

    @property
    def cpus_file(self) -> Path:
        return self.dir / f"{self.prefix}cpus"

    @property
    def effective_file(self) -> Path:
        return self.dir / (f"{self.prefix}effective_cpus" if self.version == 1 else "cpuset.cpus.effective")

    @property
    def threads_file(self) -> Path:
        # Thread ids of every task in the cgroup: v1 "tasks", v2 "cgroup.threads" (valid in threaded cgroups too).
        return self.dir / ("tasks" if self.version == 1 else "cgroup.threads")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def cpuset_mounts() -> list[Mount]:
    """Every mount that can reach cpuset files: v1 mounts carrying the cpuset controller, and cgroup2 mounts."""
    try:
        lines = (PROC_ROOT / "self" / "mountinfo").read_text().splitlines()
    except OSError as exc:
        raise TuneError(f"cannot read the mount table: {exc.strerror}") from None
    mounts = []
    for line in lines:
        f = line.split()
        if "-" not in f:
            continue
        sep = f.index("-")
        fstype, super_opts = f[sep + 1], f[sep + 3].split(",") if len(f) > sep + 3 else []
        if fstype == "cgroup" and "cpuset" in super_opts:
            prefix = "" if "noprefix" in super_opts else "cpuset."
            mounts.append(Mount(_unescape(f[3]), Path(_unescape(f[4])), 1, prefix))
        elif fstype == "cgroup2":
            mounts.append(Mount(_unescape(f[3]), Path(_unescape(f[4])), 2, "cpuset."))
    return mounts


def _task(ident: dict[str, object]) -> tuple[int, int]:
    """(pid, tid) from a target ident: pid=N is the process (its main thread), tid=N one thread of it."""
    try:
        tid = int(str(ident["tid"])) if "tid" in ident else None
        pid = int(str(ident["pid"])) if "pid" in ident else None
    except ValueError:
        pid = tid = None
    if tid is not None:
        return (pid if pid is not None else tgid(tid)), tid
    if pid is not None:
        return pid, pid
    raise TuneError(f"cgroup-cpuset needs a target pid=N or tid=N, got {ident}")


def tgid(tid: int) -> int:
    try:
        for line in (PROC_ROOT / str(tid) / "status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except OSError:
        pass
    raise TuneError(f"task {tid} no longer exists", "re-run `vhtune discover` and plan again")


def locate(pid: int, tid: int) -> CpusetCgroup:
    """The cpuset cgroup task pid/tid is in; refuses the root cgroup and a v2 parent without cpuset enabled."""
    try:
        lines = (PROC_ROOT / str(pid) / "task" / str(tid) / "cgroup").read_text().splitlines()
    except OSError:
        raise TuneError(
            f"task {tid} of process {pid} no longer exists", "re-run `vhtune discover` and plan again"
        ) from None
    v1_path: str | None = None
    v2_path: str | None = None
    for line in lines:  # "hierarchy-id:controller,controller:/path"; cgroup v2 is "0::/path"
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hid == "0" and not controllers:
            v2_path = path
        elif "cpuset" in controllers.split(","):
            v1_path = path
    mounts = cpuset_mounts()
    for version, cg_path in ((1, v1_path), (2, v2_path)):
        if cg_path is None or not any(m.version == version for m in mounts):
            continue
        if cg_path == "/":
            raise TuneError(
                f"task {tid} is in the root cpuset cgroup; vhtune does not change the root's CPUs (every process "
                "on the host lives there)",
                _HINT_OWN_CGROUP,
            )
        for m in mounts:
            if m.version != version:
                continue
            root = m.root.rstrip("/")
            if cg_path == m.root or cg_path.startswith(root + "/"):
                cg = CpusetCgroup(version, cg_path, m.point / cg_path[len(root) :].lstrip("/"), m.prefix)
                if version == 2:
                    _check_v2_enabled(cg, m)
                return cg
        raise TuneError(f"cgroup {cg_path} of task {tid} is not reachable under any mount of its hierarchy")
    raise TuneError(
        "no cpuset cgroup hierarchy is mounted on this host (neither a cgroup v1 cpuset mount nor cgroup2)",
        "mount one, or pin threads with thread-affinity",
    )


def _check_v2_enabled(cg: CpusetCgroup, m: Mount) -> None:
    # cgroup v2: a controller's interface files appear in a cgroup only when its parent lists the controller in
    # cgroup.subtree_control, which in turn needs it enabled in every ancestor up to the root.
    if cg.cpus_file.exists():
        return
    avail = _read(m.point / "cgroup.controllers").split()
    if "cpuset" not in avail:
        raise TuneError(
            f"the cpuset controller is not available in the cgroup v2 hierarchy at {m.point} (its "
            "cgroup.controllers lacks cpuset: bound to a cgroup v1 mount, or not built into the kernel)",
            "pin threads with thread-affinity instead",
        )
    parent = cg.dir.parent
    raise TuneError(
        f"the cpuset controller is not enabled for cgroup {cg.path}: {parent}/cgroup.subtree_control lacks cpuset",
        f"enable it in each ancestor from the root down (echo +cpuset > {parent}/cgroup.subtree_control), "
        "or with systemd AllowedCPUs= / libvirt <cputune>, then plan again",
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise TuneError(f"cannot read {path}: {exc.strerror}") from None


def foreign_members(cg: CpusetCgroup, discovered_pids: set[int]) -> list[tuple[int, str]]:
    """(pid, comm) of processes with a thread in the cgroup that discovery did not find.

    A cpuset.cpus write re-masks every task in the cgroup, so a cgroup shared with unrelated processes cannot be
    changed for the VM or back-end alone. Threads of a discovered process (QEMU's helper threads, a back-end's
    main thread) belong to it and are fine.
    """
    foreign: dict[int, str] = {}
    for line in _read(cg.threads_file).split():
        try:
            pid = tgid(int(line))
        except TuneError:
            continue  # exited since the list was read
        if pid not in discovered_pids and pid not in foreign:
            try:
                foreign[pid] = (PROC_ROOT / str(pid) / "comm").read_text().strip()
            except OSError:
                continue
    return sorted(foreign.items())


def _cpus(value: Value) -> list[int]:
    if isinstance(value, str):
        return parse_cpulist(value)
    if isinstance(value, int) and not isinstance(value, bool):  # "--set cgroup-cpuset pid=N 1" arrives as JSON 1
        return [value]
    try:
        return sorted({int(c) for c in value})
    except (TypeError, ValueError):
        raise TuneError(f"{value!r} is not a CPU list", "write it like 0-2,5") from None


class CgroupCpusetKnob(Knob):
    name = "cgroup-cpuset"
    survives_reboot = False  # cgroupfs lives in memory; libvirt/systemd recreate the cgroups at boot

    def cgroup(self) -> CpusetCgroup:
        pin = self.target.ident.get("cgroup")
        if isinstance(pin, dict):  # a journal's target: the cgroup the value was saved from
            return CpusetCgroup(int(pin["version"]), str(pin["path"]), Path(str(pin["dir"])), str(pin["prefix"]))
        return locate(*_task(self.target.ident))

    def pinned(self) -> Target:
        # The task may move to another cgroup (or its pid be reused) before a rollback; the old CPU list belongs
        # to the cgroup it was read from.
        cg = self.cgroup()
        pin = {"version": cg.version, "path": cg.path, "dir": str(cg.dir), "prefix": cg.prefix}
        return Target(self.target.kind, {**self.target.ident, "cgroup": pin})

    def normalize(self, value: Value) -> Value:
        return _cpus(value)

    def read(self) -> Value:
        return parse_cpulist(_read(self.cgroup().cpus_file))

    def effective(self) -> list[int]:
        """The CPUs the kernel actually grants the cgroup's tasks (its request ∩ what its parent has online)."""
        return parse_cpulist(_read(self.cgroup().effective_file))

    def apply(self, value: Value) -> None:
        cg = self.cgroup()
        cpus = self.normalize(value)
        self._check_parent(cg, cpus)
        data = (format_cpulist(cpus) + "\n").encode()
        try:
            fd = os.open(cg.cpus_file, os.O_WRONLY | os.O_TRUNC)  # as `echo >` opens it
            try:
                os.write(fd, data)  # one write(2): cgroupfs parses the whole list in that call
            finally:
                os.close(fd)
        except OSError as exc:
            raise TuneError(
                f"cannot write {format_cpulist(cpus) or 'an empty list'} to {cg.cpus_file}: "
                f"{_WHY.get(exc.errno or 0, exc.strerror)}"
            ) from None

    def _check_parent(self, cg: CpusetCgroup, cpus: list[int]) -> None:
        # v1 requires cpuset.cpus ⊆ the parent's cpuset.cpus (the kernel answers EACCES otherwise). v2 accepts any
        # list but grants only its intersection with the parent's cpuset.cpus.effective, and an empty list
        # means "inherit the parent's": refuse the silent shrink rather than verify a value that is not granted.
        if not cpus:
            return
        parent_file = cg.dir.parent / (f"{cg.prefix}cpus" if cg.version == 1 else "cpuset.cpus.effective")
        if not parent_file.exists():
            return
        parent = parse_cpulist(_read(parent_file))
        outside = sorted(set(cpus) - set(parent))
        if outside:
            raise TuneError(
                f"CPUs {format_cpulist(outside)} are outside {parent_file} ({format_cpulist(parent) or 'empty'}); "
                f"cgroup {cg.path} can only use CPUs its parent has",
                "pick CPUs from the parent's list, or widen the parent first",
            )

    def command(self, value: Value) -> str:
        text = format_cpulist(self.normalize(value)) or '""'  # an empty list: v2 "inherit the parent's CPUs"
        return f"echo {text} > {shlex.quote(str(self.cgroup().cpus_file))}"


# What each errno of a cpuset.cpus write means (kernel/cgroup/cpuset.c, cpuset-v1.c; EACCES, ERANGE, ENOSPC, EBUSY
# and EINVAL for an unparsable list measured on this 6.18 host with cgroup v1).
_WHY = {
    errno.EACCES: "not a subset of the parent cgroup's cpuset.cpus (cgroup v1), or the read-only root cpuset",
    errno.ERANGE: "names a CPU number beyond this host's possible CPUs",
    errno.ENOSPC: "an empty CPU list while the cgroup holds tasks (cgroup v1 cannot leave them without a CPU)",
    errno.EBUSY: "a child cgroup still uses CPUs this change removes",
    errno.EINVAL: "the kernel rejected the list (not a CPU list, CPUs outside the top cpuset, or an overlap with a "
    "cpu_exclusive sibling)",
    errno.ENOENT: "the cgroup was removed",
}
