"""cross-numa: a back-end thread runs on a NUMA node other than the one holding its VM's memory or vCPUs.
Inputs: discovery only (CPU → node, thread affinity / last CPU, the VM's memory nodes from numa_maps). On a
single-node host it can never fire."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vhtune.detect import recommend as R
from vhtune.detect.evaluate import context, found, iso
from vhtune.detect.finding import Evidence, Finding

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.table import Detector


def _node(rec: Recording, tid: int, pid: int | None) -> int | None:
    info = rec.topology.thread(tid, pid)
    aff = [int(c) for c in info.get("affinity") or []]
    nodes = {rec.topology.cpu_node.get(c) for c in aff}
    if len(nodes) == 1 and None not in nodes:
        return nodes.pop()
    node = info.get("numa_node")
    return int(node) if node is not None else None


def cross_numa(rec: Recording, det: Detector) -> list[Finding]:
    if len(set(rec.topology.cpu_node.values())) < 2:
        return []
    out = []
    th = det.threshold("remote_nodes")
    for path in rec.topology.paths:
        # A path's threads are (its front-end's pid, tid) and (its back-end's pid, tid); tid alone where unknown.
        fpid = path.frontend_pids[0] if len(path.frontend_pids) == 1 else None
        home = set(path.memory_nodes) or {n for t in path.vcpu_tids if (n := _node(rec, t, fpid)) is not None}
        if not home:
            continue
        for tid in path.backend_tids:
            node = _node(rec, tid, path.backend_pid)
            if node is None or node in home:
                continue
            comm = str(rec.topology.thread(tid, path.backend_pid).get("comm", tid))
            ev = Evidence(
                th.metric,
                1.0,
                th.value,
                th.op,
                th.unit,
                th.source,
                1.0,
                rec.intervals,
                first=iso(rec.span[0]),
                last=iso(rec.span[1]),
                note=f"back-end on node {node}, guest memory/vCPUs on node(s) {sorted(home)}",
            )
            f = found(
                rec,
                det,
                ev,
                subject=f"thread {comm} (tid {tid})"
                if path.backend_pid is None or len(rec.topology.pids_of_tid(tid)) < 2
                else f"thread {comm} (pid {path.backend_pid}, tid {tid})",
                subject_kind="thread",
                path=path.name,
                details={"tid": tid, "pid": path.backend_pid, "node": node, "home": sorted(home)},
                quality=0.9,
                sev="warning",
                context_evidence=(context("back-end node", float(node), ""),),
            )
            target = min(home)
            cpus = sorted(c for c, n in rec.topology.cpu_node.items() if n == target)
            f.recommendations = R.ranked([R.numa_bind(tid, comm, target, cpus)])
            out.append(f)
    return out
