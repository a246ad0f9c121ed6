"""vhtune changes only what it discovered: a thread of a VM or back-end, a VM's tap, a VM, a vhtune back-end.

Host-wide knobs (sysctls, module parameters) are bounded by their own allow-lists instead. Thread ids are
checked against a fresh discovery at apply time too: a tid freed and reused by an unrelated process between
plan and apply must not be touched.
"""

from __future__ import annotations

from vhtune.discover.model import ROLE_BACKEND, ROLE_VCPU, ROLE_VHOST_WORKER, ROLE_VMM, Snapshot
from vhtune.errors import TuneError
from vhtune.tune.knob import Target

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
}
TUNABLE_THREAD_ROLES = {ROLE_VCPU, ROLE_VHOST_WORKER, ROLE_BACKEND, ROLE_VMM}
HOST_WIDE = {"sysctl", "module-param"}


def check_target(target: Target, snap: Snapshot) -> None:
    kind, ident = target.kind, target.ident
    if kind in HOST_WIDE:
        return
    if kind == "thread":
        tid = int(ident.get("tid", -1))
        for t in snap.threads:
            if t.tid == tid and t.role in TUNABLE_THREAD_ROLES:
                return
        raise TuneError(
            f"thread {tid} is not a VM or back-end thread that vhtune discovered; refusing to touch it",
            "pick a thread from `vhtune discover`",
        )
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
        pid = int(ident.get("pid", -1))
        if any(b.pid == pid for b in snap.backends):
            return
        raise TuneError(f"back-end pid {pid} was not discovered on this host", "pick one from `vhtune discover`")
    raise TuneError(f"unknown target kind {kind!r}")
