"""Thread roles from thread names (comm), and ThreadInfo built from /proc/PID/task/TID."""

from __future__ import annotations

import re

from vhtune.discover.model import (
    ROLE_BACKEND,
    ROLE_OTHER,
    ROLE_VCPU,
    ROLE_VHOST_WORKER,
    ROLE_VMM,
    ThreadInfo,
)
from vhtune.discover.procfs import ProcFS

# QEMU names vCPU threads "CPU <index>/<accel>" when started with -name ...,debug-threads=on.
_VCPU = re.compile(r"^CPU (\d+)/(KVM|TCG|HVF|WHPX|NVMM|XEN)$")
# vhost-net workers: a kernel thread "vhost-<owner pid>" (before 6.4) or, since 6.4, a vhost_task thread of
# the same name inside the owner (QEMU) process.
VHOST_WORKER = re.compile(r"^vhost-(\d+)$")
# Data-path thread names of vhost-user back-ends: DPDK lcores ("rte-worker-N" in 22.11 as seen here,
# "lcore-worker-N" in older releases, "dpdk-worker<N>" in newer ones), OVS-DPDK PMD threads ("pmd-c03/id:8",
# older "pmd16") and vhtune's own back-end ("vhtune-q<n>").
_BACKEND = (
    re.compile(r"^(?:rte|lcore)-worker-(\d+)$"),
    re.compile(r"^dpdk-worker(\d+)$"),
    re.compile(r"^vhtune-q(\d+)$"),
)
_OVS_PMD = re.compile(r"^pmd(?:-c\d+/id:\d+|\d+)$")
_DPDK_HINT = re.compile(r"^(?:rte|lcore|dpdk)-worker|^eal-intr-thread$|^rte_mp_handle$")


def classify(comm: str, in_vmm: bool) -> tuple[str, int | None, int | None]:
    """(role, vcpu_index, queue) for a thread name; ``in_vmm``: the thread belongs to a QEMU process."""
    if m := _VCPU.match(comm):
        return ROLE_VCPU, int(m.group(1)), None
    if VHOST_WORKER.match(comm):
        return ROLE_VHOST_WORKER, None, None
    for rx in _BACKEND:
        if m := rx.match(comm):
            return ROLE_BACKEND, None, int(m.group(1))
    if _OVS_PMD.match(comm):
        return ROLE_BACKEND, None, None
    return (ROLE_VMM if in_vmm else ROLE_OTHER), None, None


def backend_kind(comm: str, argv: list[str], thread_comms: list[str]) -> str:
    """Which kind of vhost-user back-end a process is, from its name, command line and thread names."""
    joined = " ".join(argv)
    if any(t.startswith("vhtune-q") for t in thread_comms) or ("vhtune" in joined and "backend" in argv[1:]):
        return "vhtune"
    if comm.startswith("ovs-vswitchd") or any(_OVS_PMD.match(t) for t in thread_comms):
        return "ovs"
    if "dpdk" in comm or "testpmd" in comm or any(_DPDK_HINT.match(t) for t in thread_comms):
        return "dpdk"
    return "unknown"


def read_thread(
    fs: ProcFS, pid: int, tid: int, node_of: dict[int, int], in_vmm: bool, comm: str | None = None
) -> ThreadInfo:
    """Raises OSError when the thread vanished or cannot be read."""
    if comm is None:
        comm = fs.comm(pid, tid)
    role, vcpu, queue = classify(comm, in_vmm)
    st = fs.sched_stat(pid, tid)
    last = st.last_cpu
    return ThreadInfo(
        pid=pid,
        tid=tid,
        comm=comm,
        role=role,
        affinity=fs.affinity(pid, tid),
        last_cpu=last,
        numa_node=None if last is None else node_of.get(last, 0 if not node_of else None),
        vcpu_index=vcpu,
        queue=queue,
        policy=st.policy,
        rt_priority=st.rt_priority,
        nice=st.nice,
    )
