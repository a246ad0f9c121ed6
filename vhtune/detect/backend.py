"""Detectors on back-end threads (vhost-net workers, vhost-user data-path threads): saturation, CPU contention,
wake-up latency. Inputs: the threads and runq_hist tables (sched tracepoints), competitors, discovery's CPU
affinity. Poll-mode back-ends (DPDK lcores, OVS PMD threads) are on-CPU 100 % by design: saturation is not
judged from their on-CPU time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from vhtune.analysis.topology import BACKEND_ROLES, Path
from vhtune.detect import recommend as R
from vhtune.detect.evaluate import context, crossing, found
from vhtune.detect.finding import Evidence, Finding, Recommendation
from vhtune.detect.placement import CpuChoice, all_cpus, choose_cpu, cpus_of, describe, sched_of
from vhtune.discover.model import REALTIME_POLICIES

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.table import Detector

POLL_MODE = ("dpdk", "ovs")


def _backend_threads(rec: Recording) -> list[tuple[int, pd.DataFrame, Path | None]]:
    """(tid, its rows, its path) of every back-end thread; a thread is (pid, tid), so a tid that came back under
    another pid (a restarted back-end after pid_max wrapped) is two entries."""
    tm = rec.thread_metrics
    be = tm[tm["role"].isin(BACKEND_ROLES)]
    out = []
    for (_pid, tid), g in be.groupby(["pid", "tid"], sort=True):
        path = rec.topology.by_name(str(g["path"].iloc[-1]))
        out.append((int(str(tid)), g, path))
    return out


def _subject(rec: Recording, g: pd.DataFrame, tid: int) -> str:
    pid = int(g["pid"].iloc[-1])
    if len(rec.topology.pids_of_tid(tid)) > 1:  # the tid was reused: say which of its threads
        return f"thread {g['comm'].iloc[-1]} (pid {pid}, tid {tid})"
    return f"thread {g['comm'].iloc[-1]} (tid {tid})"


def _finding(rec: Recording, det: Detector, tid: int, g: pd.DataFrame, ev: Evidence, quality: float = 1.0) -> Finding:
    return found(
        rec,
        det,
        ev,
        subject=_subject(rec, g, tid),
        subject_kind="thread",
        path=str(g["path"].iloc[-1]),
        details={"tid": tid, "pid": int(g["pid"].iloc[-1]), "comm": str(g["comm"].iloc[-1])},
        quality=quality,
    )


def _pid(g: pd.DataFrame) -> int:
    return int(g["pid"].iloc[-1])


def _top_competitor(rec: Recording, comp: pd.DataFrame, f: Finding) -> tuple[pd.Series, str]:
    """The task that took the most CPU time from the thread (first row of _competitors) and who it is; the
    finding keeps its row in details["competitor"]."""
    top = comp.iloc[0]
    f.details["competitor"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in top.items()}
    return top, describe(rec, int(top["pid"]), int(top["tid"]), str(top["comm"]))


def _move(rec: Recording, pid: int, tid: int, comm: str, choice: CpuChoice, why: str) -> Recommendation | None:
    """The thread-affinity move ``choice`` allows, with the risk of a CPU that is not really free."""
    if not choice.cpus:
        return None
    move = R.affinity(tid, comm, cpus_of(rec, tid, pid), choice.cpus, why)
    occupant = choice.shared.get(choice.cpus[0])
    if occupant is not None:
        move.risk = f"{occupant.sentence()}: they will share it"
    elif not choice.clean:
        move.risk = f"its competitors also ran on CPU {choice.cpus[0]}: they may follow it there"
    return move


def _explain_no_move(f: Finding, choice: CpuChoice) -> None:
    """Evidence for the CPUs a move was not proposed to (each runs a busy data-path thread)."""
    if choice.clean or not choice.taken:
        return
    held = float(len(choice.taken))
    f.evidence.append(context("CPUs held by busy data-path threads", held, "", choice.why_not_free()))
    f.details["cpus_taken"] = {str(c): o.sentence() for c, o in sorted(choice.taken.items())}
    if not choice.cpus:
        f.explanation += (
            " No move to another CPU is proposed: every other CPU runs a busy data-path thread (see the evidence), "
            "and sharing it would trade one contention for another."
        )


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
            recs += R.two_queue_pairs(
                path,
                "two queue pairs split the traffic over two back-end threads (guest: ethtool -L eth0 combined 2)",
                "more vCPU interrupts and threads; the back-end must serve the extra queue pair",
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
        choice = choose_cpu(rec, tid, set(), _pid(g))
        move = _move(rec, _pid(g), tid, comm, choice, "other tasks on a shared CPU")
        if move is not None:
            recs.append(move)
        _explain_no_move(f, choice)
        f.recommendations = R.ranked(recs)
        out.append(f)
    return out


def _fifo_or_why_not(rec: Recording, f: Finding, tid: int, comm: str, why: str) -> Recommendation | None:
    """The SCHED_FIFO recommendation; when the thread is real-time already, evidence that says so instead."""
    current = sched_of(rec, tid, int(f.details["pid"]))
    fifo = R.sched_fifo(tid, comm, why, current)
    if fifo is None and current is not None and current["policy"] in REALTIME_POLICIES:
        f.evidence.append(
            context(
                "real-time priority already", float(current["priority"]), "",
                f"SCHED_{current['policy'].upper()}: it waits behind other real-time tasks or interrupt handlers "
                "on its CPU, so a higher class would not help",
            )
        )  # fmt: skip
        f.explanation += " No real-time priority is proposed: the thread has one already (see the evidence)."
    elif fifo is None and current is not None:
        f.evidence.append(
            context(
                "scheduling class vhtune cannot restore", None, "",
                f"SCHED_{current['policy'].upper()}: a change to SCHED_FIFO could not be rolled back by vhtune",
            )
        )  # fmt: skip
        f.explanation += " No real-time priority is proposed: vhtune could not put the thread's class back."
    return fifo


def _competitors(rec: Recording, pid: int, tid: int) -> pd.DataFrame:
    c = rec.competitors
    if not len(c):
        return c
    cpus = cpus_of(rec, tid, pid)
    if cpus and len(cpus) < len(all_cpus(rec)):
        c = c[c["cpu"].isin(cpus)]
    c = c[(c["tid"] != tid) | (c["pid"] != pid)]  # the same tid under another pid is another task
    g = pd.DataFrame(c.groupby(["pid", "tid", "comm", "cpu"], as_index=False)["ns"].sum())
    return g.sort_values("ns", ascending=False)


def contention(rec: Recording, det: Detector) -> list[Finding]:
    out = []
    th = det.threshold("runq_pct")
    for tid, g, _path in _backend_threads(rec):
        ev = crossing(g["runq_pct"], th, len(g))
        if ev is None:
            continue
        f = _finding(rec, det, tid, g, ev)
        comm = str(g["comm"].iloc[-1])
        comp = _competitors(rec, _pid(g), tid)
        why = "other tasks"
        avoid: set[int] = set()
        if len(comp):
            top, why = _top_competitor(rec, comp, f)
            span_ns = max(1.0, float(g["interval_s"].sum()) * 1e9)
            f.evidence.append(
                context(
                    "competitor on its CPU", 100.0 * float(top["ns"]) / span_ns, "%", f"{why} on CPU {int(top['cpu'])}"
                )
            )
            avoid = {int(x) for x in comp["cpu"]}
        f.evidence.append(context("run-queue wait p99", float(g["runq_p99_us"].median()), "µs"))
        choice = choose_cpu(rec, tid, avoid, _pid(g))
        fifo = _fifo_or_why_not(rec, f, tid, comm, f"it no longer queues behind {why}")
        move = _move(rec, _pid(g), tid, comm, choice, why)
        # A really free CPU first; without one, priority on its own CPU first and a move to a shared CPU second.
        ordered = [move, fifo] if choice.clean else [fifo, move]
        recs = [r for r in ordered if r is not None]
        _explain_no_move(f, choice)
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
        comp = _competitors(rec, _pid(g), tid)
        if len(comp):
            top, who = _top_competitor(rec, comp, f)
            f.evidence.append(context("ran before it", float(top["ns"]) / 1e6, "ms", f"{who} on CPU {int(top['cpu'])}"))
        fifo = _fifo_or_why_not(rec, f, tid, comm, "its wake-up → run latency drops to the scheduler's preemption cost")
        recs = [fifo] if fifo is not None else []
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
