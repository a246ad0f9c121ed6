"""Detectors on back-end threads (vhost-net workers, vhost-user data-path threads): saturation, CPU contention,
wake-up latency. Inputs: the threads and runq_hist tables (sched tracepoints), competitors, discovery's CPU
affinity. Poll-mode back-ends (DPDK lcores, OVS PMD threads) are on-CPU 100 % by design: saturation is not
judged from their on-CPU time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from vhtune.analysis.topology import BACKEND_ROLES, Path
from vhtune.detect import recommend as R
from vhtune.detect.evaluate import confidence, context, crossing, score, severity
from vhtune.detect.finding import Evidence, Finding

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.table import Detector

POLL_MODE = ("dpdk", "ovs")


def _backend_threads(rec: Recording) -> list[tuple[int, pd.DataFrame, Path | None]]:
    tm = rec.thread_metrics
    be = tm[tm["role"].isin(BACKEND_ROLES)]
    out = []
    for tid, g in be.groupby("tid", sort=True):
        path = rec.topology.by_name(str(g["path"].iloc[-1]))
        out.append((int(str(tid)), g, path))
    return out


def _subject(g: pd.DataFrame, tid: int) -> str:
    return f"thread {g['comm'].iloc[-1]} (tid {tid})"


def _finding(rec: Recording, det: Detector, tid: int, g: pd.DataFrame, ev: Evidence, quality: float = 1.0) -> Finding:
    sev = severity(ev)
    conf = confidence(rec, ev, quality)
    return Finding(
        id=det.id,
        title=det.title,
        subject=_subject(g, tid),
        subject_kind="thread",
        path=str(g["path"].iloc[-1]),
        severity=sev,
        confidence=conf,
        explanation=det.explanation,
        evidence=[ev],
        span=(ev.first, ev.last),
        score=score(sev, conf, ev),
        details={"tid": tid, "pid": int(g["pid"].iloc[-1]), "comm": str(g["comm"].iloc[-1])},
    )


def _cpus_of(rec: Recording, tid: int) -> list[int]:
    aff = rec.topology.threads.get(tid, {}).get("affinity") or []
    return sorted(int(c) for c in aff)


def _all_cpus(rec: Recording) -> list[int]:
    if rec.topology.cpu_node:
        return sorted(rec.topology.cpu_node)
    seen = set(rec.competitors["cpu"].astype(int)) if len(rec.competitors) else set()
    for t in rec.topology.threads.values():
        seen.update(int(c) for c in t.get("affinity") or [])
    return sorted(seen)


def _free_cpus(rec: Recording, tid: int, avoid: set[int]) -> tuple[list[int], bool]:
    """A CPU to move ``tid`` to, and whether it is really free: not its own, not where its competitors ran, not
    one a vCPU, back-end or front-end thread is pinned to. When none is free the least bad one is returned."""
    everything = _all_cpus(rec)
    own = set(_cpus_of(rec, tid))
    n = len(everything)
    datapath = {pid for p in rec.topology.paths for pid in p.pids}
    pinned: set[int] = set()
    for t, info in rec.topology.threads.items():
        aff = info.get("affinity") or []
        busy = info.get("role") in ("vcpu", *BACKEND_ROLES) or int(info.get("pid", -1)) in datapath
        if t != tid and busy and 0 < len(aff) < n:
            pinned.update(int(c) for c in aff)
    c = rec.competitors
    if len(c):  # where data-path threads whose affinity discovery did not see were seen running
        span_ns = max(1.0, rec.intervals * rec.interval_s * 1e9)
        per = pd.DataFrame(
            c[c["pid"].isin(datapath) & (c["tid"] != tid)].groupby(["tid", "cpu"], as_index=False)["ns"].sum()
        )
        pinned.update(int(x) for x in per[per["ns"] >= 0.05 * span_ns]["cpu"])  # ≥ 5 % of the span: a real load
    for clean, cands in (
        (True, [c for c in everything if c not in own | avoid | pinned]),
        (False, [c for c in everything if c not in own | avoid]),
        (False, [c for c in everything if c not in own]),
    ):
        if cands:
            return cands[:1], clean
    return [], False


def _spins_by_design(path: Path) -> bool:
    """Threads whose on-CPU share says nothing about load: poll-mode back-ends (DPDK, OVS PMDs) and a vhtune
    back-end told to busy-poll run at ~100 % whether they move one packet or millions."""
    return path.backend_kind in POLL_MODE or bool(path.tunables.get("busy_poll_us"))


def saturated(rec: Recording, det: Detector) -> list[Finding]:
    out = []
    th = det.threshold("oncpu_pct")
    for tid, g, path in _backend_threads(rec):
        if path is not None and _spins_by_design(path):
            continue
        ev = crossing(g["oncpu_pct"], th, len(g))
        if ev is None:
            continue
        f = _finding(rec, det, tid, g, ev)
        comm = str(g["comm"].iloc[-1])
        recs = []
        if path is not None and path.frontend_pids:
            recs.append(
                R.qemu_option(
                    path,
                    "queues",
                    None,
                    2,
                    "two queue pairs split the traffic over two back-end threads (guest: ethtool -L eth0 combined 2)",
                    "more vCPU interrupts and threads; the back-end must serve the extra queue pair",
                )
            )
            recs.append(
                R.guest_command(
                    f"guest of {path.name}",
                    "ethtool -L eth0 combined 2   # inside the guest, after the VM has 2 queue pairs",
                    "the guest spreads flows over both queues (RSS/XPS)",
                    "none beyond the queue change itself",
                    "ethtool -L eth0 combined 1",
                )
            )
        free, _clean = _free_cpus(rec, tid, set())
        if free:
            recs.append(R.affinity(tid, comm, _cpus_of(rec, tid), free, "other tasks on a shared CPU"))
        f.recommendations = R.ranked(recs)
        out.append(f)
    return out


def _competitors(rec: Recording, tid: int) -> pd.DataFrame:
    c = rec.competitors
    if not len(c):
        return c
    cpus = _cpus_of(rec, tid)
    if cpus and len(cpus) < len(_all_cpus(rec)):
        c = c[c["cpu"].isin(cpus)]
    c = c[c["tid"] != tid]
    g = pd.DataFrame(c.groupby(["pid", "tid", "comm", "cpu"], as_index=False)["ns"].sum())
    return g.sort_values("ns", ascending=False)


def _who(rec: Recording, pid: int, tid: int, comm: str) -> str:
    for p in rec.topology.paths:
        if tid in p.vcpu_tids:
            return f"vCPU {comm} of {p.name}"
        if pid in p.frontend_pids:
            return f"front-end thread {comm} of {p.name}"
        if tid in p.backend_tids:
            return f"back-end thread {comm} of {p.name}"
    return f"{comm} (pid {pid})"


def contention(rec: Recording, det: Detector) -> list[Finding]:
    out = []
    th = det.threshold("runq_pct")
    for tid, g, _path in _backend_threads(rec):
        ev = crossing(g["runq_pct"], th, len(g))
        if ev is None:
            continue
        f = _finding(rec, det, tid, g, ev)
        comm = str(g["comm"].iloc[-1])
        comp = _competitors(rec, tid)
        why = "other tasks"
        avoid: set[int] = set()
        if len(comp):
            top = comp.iloc[0]
            why = _who(rec, int(top["pid"]), int(top["tid"]), str(top["comm"]))
            span_ns = max(1.0, float(g["interval_s"].sum()) * 1e9)
            f.evidence.append(
                context(
                    "competitor on its CPU", 100.0 * float(top["ns"]) / span_ns, "%", f"{why} on CPU {int(top['cpu'])}"
                )
            )
            f.details["competitor"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in top.items()}
            avoid = {int(x) for x in comp["cpu"]}
        f.evidence.append(context("run-queue wait p99", float(g["runq_p99_us"].median()), "µs"))
        recs = []
        free, clean = _free_cpus(rec, tid, avoid)
        fifo = R.sched_fifo(tid, comm, f"it no longer queues behind {why}")
        if free and clean:
            recs += [R.affinity(tid, comm, _cpus_of(rec, tid), free, why), fifo]
        elif free:
            # No free CPU: every other one runs a pinned data-path thread. Priority on its own CPU comes first.
            move = R.affinity(tid, comm, _cpus_of(rec, tid), free, why)
            move.risk = f"CPU {free[0]} already runs a pinned vCPU/back-end/front-end thread: they will share it"
            recs += [fifo, move]
        else:
            recs.append(fifo)
        f.recommendations = R.ranked(recs)
        out.append(f)
    return out


def wakeup_latency(rec: Recording, det: Detector) -> list[Finding]:
    out = []
    th = det.threshold("runq_p99_us")
    cont = det.threshold("runq_pct_max")
    for tid, g, path in _backend_threads(rec):
        quiet = g[g["runq_pct"] < cont.value]  # intervals where contention does not explain the wait
        ev = crossing(quiet["runq_p99_us"], th, len(g))
        if ev is None:
            continue
        f = _finding(rec, det, tid, g, ev)
        comm = str(g["comm"].iloc[-1])
        comp = _competitors(rec, tid)
        if len(comp):
            top = comp.iloc[0]
            who = _who(rec, int(top["pid"]), int(top["tid"]), str(top["comm"]))
            f.evidence.append(context("ran before it", float(top["ns"]) / 1e6, "ms", f"{who} on CPU {int(top['cpu'])}"))
            f.details["competitor"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in top.items()}
        recs = [R.sched_fifo(tid, comm, "its wake-up → run latency drops to the scheduler's preemption cost")]
        if path is not None:
            recs.append(
                R.backend_tunable(
                    path,
                    "busy_poll_us",
                    None,
                    50,
                    "the back-end polls 50 µs before sleeping, so a kick in that window needs no wake-up",
                    "burns up to 50 µs of CPU per idle period",
                )
            )
        f.recommendations = R.ranked(recs)
        out.append(f)
    return out
