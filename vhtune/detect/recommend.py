"""Recommendation builders: the exact command for each knob, with its current → proposed value, expected effect,
risk and rollback. Where vhtune/tune has the knob, the command is the knob's own ``command()`` text and a
``vhtune tune plan --set`` line is given, so what the report prints is what ``vhtune tune`` would do."""

from __future__ import annotations

import json
import shlex
from typing import Any

from vhtune.analysis.topology import Path
from vhtune.detect.finding import Recommendation
from vhtune.discover.model import REALTIME_POLICIES
from vhtune.tune.knob import Target, format_cpulist
from vhtune.tune.knobs import KNOBS
from vhtune.tune.knobs.thread import ThreadSchedKnob


def _tune(knob: str, target: str, value: Any) -> dict[str, Any]:
    """``tune_set`` (the command line) and ``tune`` (the same as data: knob, target ident, value)."""
    v = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    ident: dict[str, Any] = {}
    for part in target.split(","):
        k, _, val = part.partition("=")
        ident[k] = int(val) if val.isdigit() else val
    return {
        "tune_set": f"vhtune tune plan --set {knob} {target} {shlex.quote(v)}",
        "tune": {"knob": knob, "target": ident, "value": value},
    }


def affinity(tid: int, comm: str, current: list[int], proposed: list[int], why: str) -> Recommendation:
    cmd = KNOBS["thread-affinity"](Target("thread", {"tid": tid})).command(proposed)
    cur = format_cpulist(current) if current else "unknown"
    return Recommendation(
        rank=0,
        knob="thread-affinity",
        target=f"tid={tid}",
        current=cur,
        proposed=format_cpulist(proposed),
        # A task whose cgroup cpuset excludes the new CPUs cannot be moved by sched_setaffinity (EINVAL) and
        # a cpuset change re-masks it later: then the cgroup-cpuset knob changes the cgroup instead.
        command=f"{cmd}   # if its cgroup's cpuset forbids that: vhtune tune plan --set cgroup-cpuset tid={tid} "
        f"{format_cpulist(proposed)}",
        expected=f"{comm} gets CPU time without waiting behind {why}",
        risk="the CPUs it moves to lose that much capacity; pin the displaced load elsewhere if it matters",
        rollback=f"taskset -pc {cur} {tid}" if current else "vhtune tune rollback PLAN",
        **_tune("thread-affinity", f"tid={tid}", format_cpulist(proposed)),
    )


# The real-time priority proposed: above every SCHED_OTHER/BATCH/IDLE task, below threaded IRQ handlers (they
# run at SCHED_FIFO 50), so the NIC's and timer's handlers still run first.
FIFO_PRIORITY = 10


def sched_fifo(tid: int, comm: str, why: str, current: dict[str, Any] | None) -> Recommendation | None:
    """SCHED_FIFO at FIFO_PRIORITY; None when the thread is already real-time at least that high (the same
    command would change nothing) or under a policy vhtune cannot put back (SCHED_DEADLINE, SCHED_EXT).
    ``current``: discovery's value, None when the recording does not have it."""
    if current is not None and (
        not ThreadSchedKnob.settable(current["policy"])
        or (current["policy"] in REALTIME_POLICIES and current["priority"] >= FIFO_PRIORITY)
    ):
        return None
    value: dict[str, Any] = {"policy": "fifo", "priority": FIFO_PRIORITY}
    if current is not None and current.get("nice"):
        value["nice"] = current["nice"]  # kept as it is: the command's renice then changes nothing
    knob = KNOBS["thread-sched"](Target("thread", {"tid": tid}))
    return Recommendation(
        rank=0,
        knob="thread-sched",
        target=f"tid={tid}",
        current=current if current is not None else "unknown",
        proposed=value,
        command=knob.command(value),
        expected=f"{comm} preempts normal tasks as soon as it wakes: {why}",
        risk="a busy real-time thread can starve everything else on its CPU (RT throttling caps it at 95 %)",
        rollback=knob.command(current) if current is not None else "vhtune tune rollback PLAN",
        **_tune("thread-sched", f"tid={tid}", value),
    )


def txqueuelen(dev: str, netns: str, current: int | None, proposed: int) -> Recommendation:
    target = f"dev={dev},netns={netns or 'root'}"
    return Recommendation(
        rank=0,
        knob="tap-txqueuelen",
        target=target,
        current=current if current is not None else "unknown",
        proposed=proposed,
        command=KNOBS["tap-txqueuelen"](Target("tap", {"dev": dev, "netns": netns or "root"})).command(proposed),
        expected="the tap's ring (tun sizes it from txqueuelen) absorbs bursts the reader takes a moment to drain",
        risk="more packets queued = more latency under sustained overload (bufferbloat); memory per queued skb",
        rollback=(
            KNOBS["tap-txqueuelen"](Target("tap", {"dev": dev, "netns": netns or "root"})).command(current)
            if current is not None
            else "vhtune tune rollback PLAN"
        ),
        **_tune("tap-txqueuelen", target, proposed),
    )


def backend_tunable(path: Path, key: str, current: Any, proposed: Any, expected: str, risk: str) -> Recommendation:
    """A live tunable of the vhtune back-end, set through its control socket (JSON lines)."""
    if path.backend_kind not in ("vhtune", "unknown"):
        return _other_backend(path, key, proposed, expected, risk)
    if current is None or key in path.tunables:
        current = path.tunables.get(key, current)  # the value the back-end reported, when recorded
    sock = path.control_socket or "<control socket given to vhtune backend --control>"
    line = json.dumps({"cmd": "set", key: proposed}, separators=(",", ":"))
    back = json.dumps({"cmd": "set", key: current}, separators=(",", ":")) if current is not None else None
    return Recommendation(
        rank=0,
        knob="backend-tunable",
        target=f"pid={path.backend_pid},key={key}",
        current=current if current is not None else "unknown",
        proposed=proposed,
        command=f"echo '{line}' | socat - UNIX-CONNECT:{sock}",
        expected=expected,
        risk=risk,
        rollback=f"echo '{back}' | socat - UNIX-CONNECT:{sock}" if back else "set the previous value the same way",
        **_tune("backend-tunable", f"pid={path.backend_pid},key={key}", proposed),
    )


_OTHER = {
    ("dpdk", "burst"): "testpmd: --burst=N (or `set burst N` at the testpmd prompt)",
    (
        "ovs",
        "burst",
    ): "OVS-DPDK batches 32 by design; check pmd-rxq-affinity and pmd load: ovs-appctl dpif-netdev/pmd-rxq-show",
    ("vhost-net", "event_idx"): "-device virtio-net-pci,...,event_idx=on (QEMU default; check the VM definition)",
    (
        "vhost-net",
        "burst",
    ): "vhost-net batches internally (VHOST_NET_BATCH 64); raise rx_queue_size/tx_queue_size instead",
    ("vhost-net", "busy_poll_us"): "QEMU: -netdev tap,...,poll-us=50 (vhost-net busy polling)",
}


def _other_backend(path: Path, key: str, proposed: Any, expected: str, risk: str) -> Recommendation:
    cmd = _OTHER.get(
        (path.backend_kind, key), f"set {key}={proposed} in the {path.backend_kind} back-end's configuration"
    )
    return Recommendation(
        0,
        "backend-option",
        f"{path.backend_kind}:{path.name}",
        "unknown",
        proposed,
        cmd,
        expected,
        risk,
        "restore the previous setting",
    )


def qemu_option(
    path: Path, option: str, current: Any, proposed: int, expected: str, risk: str, netdev: str = "net0"
) -> Recommendation:
    vm = path.name
    value = {"option": option, "value": proposed}
    cmd = KNOBS["qemu-option"](Target("vm", {"vm": vm, "netdev": netdev})).command(value)
    return Recommendation(
        rank=0,
        knob="qemu-option",
        target=f"vm={vm},netdev={netdev}",
        current=current if current is not None else "unknown",
        proposed=proposed,
        command=cmd,
        expected=expected,
        risk=risk + " (needs the VM restarted)",
        rollback="restore the previous VM definition and restart the VM",
        **_tune("qemu-option", f"vm={vm},netdev={netdev}", value),
    )


def two_queue_pairs(path: Path, expected: str, risk: str) -> list[Recommendation]:
    """Two queue pairs on the path's -netdev (vhost-user for a user-space back-end, else the tap), as the
    VM's command line has it; none when it already has two or more (more is not the obvious next step)."""
    want = "vhost-user" if path.backend_kind in ("vhtune", "dpdk", "ovs") else "tap"
    nds = [n for n in path.netdevs if n["kind"] == want] or path.netdevs
    nd = nds[0] if nds else None
    if nd is not None and nd["queues"] >= 2:
        return []
    current = nd["queues"] if nd is not None else None
    return [qemu_option(path, "queues", current, 2, expected, risk, netdev=nd["id"] if nd else "net0")]


def guest_command(what: str, command: str, expected: str, risk: str, rollback: str) -> Recommendation:
    return Recommendation(0, "guest-option", what, "unknown", "see command", command, expected, risk, rollback)


def halt_poll(current: int | None, proposed: int) -> Recommendation:
    knob = KNOBS["module-param"](Target("module-param", {"key": "kvm.halt_poll_ns"}))
    return Recommendation(
        rank=0,
        knob="module-param",
        target="key=kvm.halt_poll_ns",
        current=current if current is not None else "unknown",
        proposed=proposed,
        command=knob.command(proposed) + "   # or per VM: KVM_CAP_HALT_POLL (libvirt: <haltpollns/> not exposed)",
        expected="a vCPU that halts and is woken within the poll window skips the sleep/wake-up round trip",
        risk="polling vCPUs burn host CPU a back-end sharing the core could use",
        rollback=knob.command(current) if current is not None else "write the previous value back",
        **_tune("module-param", "key=kvm.halt_poll_ns", proposed),
    )


def numa_bind(tid: int, comm: str, node: int, cpus: list[int]) -> Recommendation:
    cpu = format_cpulist(cpus)
    return Recommendation(
        rank=0,
        knob="thread-affinity",
        target=f"tid={tid}",
        current="another node",
        proposed=cpu,
        command=(
            f"{KNOBS['thread-affinity'](Target('thread', {'tid': tid})).command(cpus)}"
            f"   # at start: numactl --cpunodebind={node} --membind={node} <back-end>"
        ),
        expected=f"{comm} touches guest memory on its own node: no remote-node latency or interconnect traffic",
        risk="the node's CPUs may already be busy; keep vCPUs and back-end off the same cores",
        rollback="vhtune tune rollback PLAN (or taskset back to the previous CPU list)",
        **_tune("thread-affinity", f"tid={tid}", cpu),
    )


def ranked(recs: list[Recommendation]) -> list[Recommendation]:
    """Number them; drop those the recording shows already in place (current == proposed)."""
    recs = [r for r in recs if r.current != r.proposed]
    for i, r in enumerate(recs, 1):
        r.rank = i
    return recs
