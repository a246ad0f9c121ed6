"""vhtune changes only what it discovered: a thread of a VM or back-end, a VM's tap, a VM, a vhtune back-end,
the cpuset cgroup of such a thread when nothing else lives in it.

Host-wide knobs (sysctls, module parameters) are bounded by their own allow-lists instead. Thread ids are
checked against a fresh discovery at apply time too: a tid freed and reused by an unrelated process between
plan and apply must not be touched.
"""

from __future__ import annotations

from vhtune.discover.model import ROLE_BACKEND, ROLE_VCPU, ROLE_VHOST_WORKER, ROLE_VMM, Snapshot
from vhtune.errors import TuneError
from vhtune.tune.knob import Target
from vhtune.tune.knobs.cgroup import CgroupCpusetKnob, foreign_members

# Which kind of target each knob takes (`vhtune tune plan --set KNOB TARGET VALUE` names its fields).
KNOB_TARGET_KIND = {
    "thread-affinity": "thread",
    "thread-sched": "thread",
    "tap-txqueuelen": "tap",
    "sysctl": "sysctl",
    "module-param": "module-param",
    "qemu-option": "vm",
    "backend-tunable": "backend",
    "tap-queue-mask": "tap",
    "cgroup-cpuset": "cgroup",
}
TUNABLE_THREAD_ROLES = {ROLE_VCPU, ROLE_VHOST_WORKER, ROLE_BACKEND, ROLE_VMM}
HOST_WIDE = {"sysctl", "module-param"}


def _id(ident: dict[str, object], key: str) -> int:
    """ident[key] as a thread or process id, or a TuneError that says how to write it."""
    try:
        return int(str(ident.get(key, -1)))
    except ValueError:
        raise TuneError(f"{key}={ident[key]!r} is not a number", f"write it like {key}=1234") from None


def check_target(target: Target, snap: Snapshot) -> None:
    kind, ident = target.kind, target.ident
    if kind in HOST_WIDE:
        return
    if kind == "thread":
        _check_thread(_id(ident, "tid"), snap)
        return
    if kind == "cgroup":
        _check_cgroup(target, snap)
        return
    if kind == "tap":
        dev, ns = ident.get("dev"), ident.get("netns", "root")
        if any(t.name == dev and t.netns == ns for t in snap.taps):
            return
        raise TuneError(
            f"tap {dev} (netns {ns}) is not a VM or back-end tap that vhtune discovered; refusing to touch it",
            "pick a tap from `vhtune discover`",
        )
    if kind == "vm":
        vm = str(ident.get("vm", ""))
        if any(str(v.pid) == vm or v.name == vm for v in snap.vms):
            return
        raise TuneError(f"VM {vm!r} was not discovered on this host", "pick a VM from `vhtune discover`")
    if kind == "backend":
        pid = _id(ident, "pid")
        if any(b.pid == pid for b in snap.backends):
            return
        raise TuneError(f"back-end pid {pid} was not discovered on this host", "pick one from `vhtune discover`")
    raise TuneError(f"unknown target kind {kind!r}")


def _check_thread(tid: int, snap: Snapshot) -> None:
    for t in snap.threads:
        if t.tid == tid and t.role in TUNABLE_THREAD_ROLES:
            return
    raise TuneError(
        f"thread {tid} is not a VM or back-end thread that vhtune discovered; refusing to touch it",
        "pick a thread from `vhtune discover`",
    )


def discovered_pids(snap: Snapshot) -> set[int]:
    """Processes that own a discovered VM or back-end thread (and VMs and back-ends themselves)."""
    pids = {t.pid for t in snap.threads if t.role in TUNABLE_THREAD_ROLES}
    return pids | {v.pid for v in snap.vms} | {b.pid for b in snap.backends}


def _check_cgroup(target: Target, snap: Snapshot) -> None:
    """A cpuset cgroup is named by a discovered task in it, and must hold nothing vhtune did not discover."""
    ident = target.ident
    if "tid" in ident:
        _check_thread(_id(ident, "tid"), snap)
    else:
        pid = _id(ident, "pid")
        if pid not in discovered_pids(snap):
            raise TuneError(
                f"process {pid} is not a VM or back-end that vhtune discovered; refusing to touch its cgroup",
                "pick a pid or tid from `vhtune discover`",
            )
    cg = CgroupCpusetKnob(target).cgroup()
    foreign = foreign_members(cg, discovered_pids(snap))
    if foreign:
        shown = ", ".join(f"{pid} ({comm})" for pid, comm in foreign[:5]) + (" …" if len(foreign) > 5 else "")
        raise TuneError(
            f"cpuset cgroup {cg.path} also holds processes vhtune did not discover ({shown}); changing its CPUs "
            "would move them too, so vhtune refuses",
            "give the VM or back-end a cpuset cgroup of its own, or use thread-affinity",
        )
