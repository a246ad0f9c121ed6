"""Where a back-end thread could be moved: the CPUs that are free, and the ones another busy data-path thread
holds (and who that is), so that no recommendation moves a thread onto a CPU where a poller spins.

Inputs: discovery's CPU affinity of every thread in the snapshot (pinned = allowed on fewer than all CPUs: a
DPDK lcore, a vCPU under vcpupin, a back-end worker), the recording's on-CPU share of the threads it measured,
and the competitors table (data-path threads seen running on a CPU while a target waited there). Measured in
the lab (`vhtune lab run dpdk-sink --fault cpu-hog`, then `vhtune tune auto`): the back-end worker moved onto
the CPU where testpmd's forwarding lcore busy-polls lost 80 % of its packet rate, and was rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from vhtune.analysis.metrics import _interval_by_ts, thread_key, time_weighted_mean
from vhtune.analysis.topology import DATAPATH_ROLES

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording

# ≥ 5 % of one CPU, or of the recording's span on one CPU: a real load, not an idle main loop or control thread.
BUSY_PCT = 5.0
SHOWN = 4  # CPUs named in an evidence note; the rest are counted


@dataclass(frozen=True)
class Occupant:
    """Another thread on a CPU a move would land on."""

    cpu: int
    tid: int
    who: str  # "front-end lcore rte-worker-0 of dpdk-testpmd-7"
    load: str  # "pinned there at 99 % on-CPU", "pinned there (not recorded)", "seen running there 40 % …"
    busy: bool  # a real load: measured at ≥ BUSY_PCT, or a data-path thread the recording did not measure
    pct: float | None = None  # its measured share of one CPU (or of the span on this CPU); None: not recorded

    def sentence(self) -> str:
        return f"CPU {self.cpu} runs {self.who} (tid {self.tid}), {self.load}"


@dataclass
class CpuChoice:
    cpus: list[int]  # the CPU to propose; [] when none may be
    clean: bool  # nothing pinned or busy there, and none of the thread's competitors ran there
    taken: dict[int, Occupant] = field(default_factory=dict)  # never proposed: a busy data-path thread is there
    shared: dict[int, Occupant] = field(default_factory=dict)  # may be proposed, not clean: a light pinned thread

    def why_not_free(self) -> str:
        """The CPUs ruled out and who holds each (the first few), for an evidence note."""
        held = [o.sentence() for _, o in sorted(self.taken.items())]
        more = f"; and {len(held) - SHOWN} more CPU(s)" if len(held) > SHOWN else ""
        return "; ".join(held[:SHOWN]) + more


def cpus_of(rec: Recording, tid: int, pid: int | None = None) -> list[int]:
    """Thread (pid, tid)'s allowed CPUs as discovery read them; by tid alone only for a caller without a pid."""
    aff = rec.topology.thread(tid, pid).get("affinity") or []
    return sorted(int(c) for c in aff)


def sched_of(rec: Recording, tid: int, pid: int | None = None) -> dict[str, Any] | None:
    """The thread's scheduling as discovery read it (the thread-sched knob's value shape); None when the
    recording predates that (discovery without policy)."""
    t = rec.topology.thread(tid, pid)
    if t.get("policy") is None:
        return None
    return {"policy": str(t["policy"]), "priority": int(t.get("rt_priority") or 0), "nice": int(t.get("nice") or 0)}


def all_cpus(rec: Recording) -> list[int]:
    if rec.topology.cpu_node:
        return sorted(rec.topology.cpu_node)
    seen = set(rec.competitors["cpu"].astype(int)) if len(rec.competitors) else set()
    for t in rec.topology.threads.values():
        seen.update(int(c) for c in t.get("affinity") or [])
    return sorted(seen)


def describe(rec: Recording, pid: int, tid: int, comm: str) -> str:
    """Who a thread is on the data paths: "vCPU CPU 0/KVM of vm0", "front-end lcore rte-worker-0 of …"."""
    info = rec.topology.thread(tid, pid)
    for p in rec.topology.paths:
        # A tid on a path is that path's thread only under that path's pid (or any, where discovery gave none).
        if tid in p.vcpu_tids and (pid in p.frontend_pids or not p.frontend_pids):
            return f"vCPU {comm} of {p.name}"
        if pid in p.frontend_pids:
            # discovery gives a DPDK lcore (rte-worker-N) its lcore index as the queue
            lcore = info.get("role") == "frontend" and info.get("queue") is not None
            return f"front-end {'lcore' if lcore else 'thread'} {comm} of {p.name}"
        if tid in p.backend_tids and (p.backend_pid is None or pid == p.backend_pid):
            return f"back-end thread {comm} of {p.name}"
    return f"{comm} (pid {pid})"


def _datapath_pids(rec: Recording) -> set[int]:
    return {pid for p in rec.topology.paths for pid in p.pids}


def _measured_oncpu(rec: Recording) -> dict[tuple[int, int], float]:
    """On-CPU % of every thread (pid, tid) the recording measured, over the intervals' own lengths (a stall
    stretches one)."""
    tm = rec.thread_metrics
    if not len(tm):
        return {}
    key = thread_key(tm["pid"], tm["tid"])
    pct = time_weighted_mean(tm["oncpu_pct"], tm["interval_s"].where(tm["interval_s"] > 0), key)
    pct = pct.dropna()
    return {(int(k) >> 32, int(k) & 0xFFFFFFFF): float(v) for k, v in zip(pct.index, pct.to_numpy(), strict=True)}


def _is(pid: int, tid: int, me: tuple[int | None, int]) -> bool:
    """Thread (pid, tid) is ``me`` ((pid or None when not known, tid))."""
    return tid == me[1] and (me[0] is None or pid == me[0])


def _pinned(rec: Recording, me: tuple[int | None, int], ncpu: int) -> list[Occupant]:
    """Threads of the data paths pinned to some CPUs (not all), with how busy the recording saw them."""
    datapath, oncpu = _datapath_pids(rec), _measured_oncpu(rec)
    out: list[Occupant] = []
    for (pid, t), info in rec.topology.threads.items():
        aff = [int(c) for c in info.get("affinity") or []]
        role = info.get("role")
        if _is(pid, t, me) or not 0 < len(aff) < ncpu or (role not in DATAPATH_ROLES and pid not in datapath):
            continue
        pct = oncpu.get((pid, t))
        if pct is None:
            # Not measured: a data-path thread (vCPU, worker, lcore) is assumed busy, anything else unknown.
            busy, load = role in DATAPATH_ROLES, "pinned there (not recorded)"
        elif pct < BUSY_PCT and role not in DATAPATH_ROLES:
            continue  # a measured idle main loop or control thread (DPDK's main lcore at its prompt)
        else:
            busy, load = pct >= BUSY_PCT, f"pinned there at {pct:.0f} % on-CPU"
        who = describe(rec, pid, t, str(info.get("comm", "?")))
        out += [Occupant(c, t, who, load, busy, pct) for c in aff]
    return out


def _running(rec: Recording, me: tuple[int | None, int]) -> list[Occupant]:
    """Data-path threads whose affinity discovery did not see, seen running on a CPU for a real share of the span."""
    c = rec.competitors
    if not len(c):
        return []
    # The intervals' own lengths: a stalled loop stretches one past the nominal interval_s.
    span_ns = max(1.0, float(_interval_by_ts(rec).sum() or rec.intervals * rec.interval_s) * 1e9)
    itself = (c["tid"] == me[1]) & (c["pid"] == me[0]) if me[0] is not None else c["tid"] == me[1]
    mine = c[c["pid"].isin(_datapath_pids(rec)) & ~itself]
    per = pd.DataFrame(mine.groupby(["pid", "tid", "cpu"], as_index=False).agg(ns=("ns", "sum"), comm=("comm", "last")))
    per = per[per["ns"] >= BUSY_PCT / 100 * span_ns]
    out = []
    for r in per.to_dict("records"):
        pct = 100 * float(r["ns"]) / span_ns
        who = describe(rec, int(r["pid"]), int(r["tid"]), str(r["comm"]))
        out.append(
            Occupant(int(r["cpu"]), int(r["tid"]), who, f"seen running there {pct:.0f} % of the recording", True, pct)
        )
    return out


def choose_cpu(rec: Recording, tid: int, avoid: set[int], pid: int | None = None) -> CpuChoice:
    """A CPU to move ``tid`` to. Clean: not its own, not in ``avoid`` (where its competitors ran), no pinned
    data-path thread there. Otherwise a CPU shared only with a light or unmeasured pinned thread, or one its
    competitors ran on. Never one a busy data-path thread holds: that trades one contention for another."""
    everything = all_cpus(rec)
    own = set(cpus_of(rec, tid, pid))
    taken: dict[int, Occupant] = {}
    shared: dict[int, Occupant] = {}
    occupants = _pinned(rec, (pid, tid), len(everything)) + _running(rec, (pid, tid))
    # Per CPU the busiest measured thread speaks for it (the recording watched it), then unmeasured ones.
    occupants.sort(key=lambda o: (o.pct is None, -(o.pct or 0.0)))
    for o in occupants:
        if o.cpu not in own:
            (taken if o.busy else shared).setdefault(o.cpu, o)
    shared = {c: o for c, o in shared.items() if c not in taken}
    free = [c for c in everything if c not in own and c not in taken]
    for clean, cands in (
        (True, [c for c in free if c not in avoid and c not in shared]),
        (False, [c for c in free if c not in avoid]),
        (False, free),
    ):
        if cands:
            return CpuChoice(cands[:1], clean, taken, shared)
    return CpuChoice([], False, taken, shared)
