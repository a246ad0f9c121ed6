"""What the exporter serves, accumulated from the recorder's per-interval rows (vhtune/recording_tables.py).

Prometheus wants monotonic counters; the recorder hands out per-interval deltas, so this folds them into
running totals per series. Series of targets that went away (a VM stopped, a thread exited) are dropped
when the recorder lets the target go, so label cardinality follows the live host, not its history. Two
sources the recorder never lets go of are bounded here: KVM injections are labelled with the injecting
context's pid (often a kworker, never a target), so series of pids that no longer exist are pruned every
PRUNE_EVERY intervals; and a thread that renames itself keeps only its newest series.
Run-queue waits come from an in-kernel log2 histogram; they are served as a Prometheus histogram whose bucket
bounds are exactly those powers of two (no re-bucketing error). prometheus-client for Python has no native
(sparse) histograms, so this is the classic exposition with 2^k-ns bounds, which native-histogram-aware
servers can convert losslessly (schema 0 uses the same base-2 boundaries).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Labels = tuple[tuple[str, str], ...]
HIST_BUCKETS = 40  # 2^0 .. 2^39 ns (~9 minutes): the kernel histogram's range
PRUNE_EVERY = 60  # intervals between sweeps for series of exited pids


def _labels(**kw: Any) -> Labels:
    return tuple((k, str(v)) for k, v in kw.items())


@dataclass
class RunqHist:
    buckets: list[int] = field(default_factory=lambda: [0] * HIST_BUCKETS)
    sum_ns: int = 0


@dataclass
class FindingGauge:
    id: str
    subject: str
    severity: str


class ExporterState:
    """Thread-safe totals; the recorder thread updates, HTTP scrape threads read."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.runq: dict[Labels, RunqHist] = {}
        self.findings: list[FindingGauge] = []
        self.info: dict[str, str] = {}
        self.intervals = 0
        self.last_update = 0.0
        self._thread_labels: dict[int, Labels] = {}  # tid → its (pid, tid, comm, role) labels now

    def _add(self, name: str, labels: Labels, value: float) -> None:
        series = self.counters[name]
        series[labels] = series.get(labels, 0.0) + float(value)

    def update(self, rows: dict[str, list[dict[str, Any]]], now: float) -> None:
        with self.lock:
            self._threads(rows.get("threads", []), rows.get("runq_hist", []))
            self._taps(rows.get("taps", []), rows.get("tap_drops", []))
            for r in rows.get("queues", []):
                lab = _labels(pid=r["pid"], fd=r["fd"], role=r["role"], queue=r["queue"])
                self._add("vhtune_eventfd_writes_total", lab, r["writes"])
                self._add("vhtune_eventfd_reads_total", lab, r["reads"])
                self._add("vhtune_eventfd_injections_total", lab, r["injections"])
            for r in rows.get("irqs", []):
                lab = _labels(pid=r["pid"], kind=r["kind"], gsi=r["gsi"])
                self._add("vhtune_kvm_injections_total", lab, r["count"])
            for r in rows.get("vcpu_wakeups", []):
                for outcome in ("polled", "waited"):
                    lab = _labels(pid=r["pid"], tid=r["tid"], outcome=outcome)
                    self._add("vhtune_vcpu_halt_wakeups_total", lab, r[outcome])
            for r in rows.get("lost", []):
                for k, v in r.items():
                    if k not in ("ts", "total"):
                        self._add("vhtune_lost_events_total", _labels(reason=k), v)
            self.intervals += 1
            self.last_update = now
            if self.intervals % PRUNE_EVERY == 0:
                self._drop(_pid_exited)

    def _threads(self, threads: list[dict[str, Any]], hist: list[dict[str, Any]]) -> None:
        ident: dict[int, Labels] = {}
        for r in threads:
            lab = _labels(pid=r["pid"], tid=r["tid"], comm=r["comm"], role=r["role"])
            tid = int(r["tid"])
            ident[tid] = lab
            old = self._thread_labels.get(tid)
            if old is not None and old != lab:  # renamed (or role changed): its old series end here
                self._drop(_under(old))
            self._thread_labels[tid] = lab
            self._add("vhtune_thread_cpu_seconds_total", lab, r["oncpu_ns"] / 1e9)
            self._add("vhtune_thread_wakeups_total", lab, r["wakeups"])
            self._add("vhtune_thread_migrations_total", lab, r["migrations"])
            self._add("vhtune_thread_switches_total", (*lab, ("kind", "voluntary")), r["vol_switches"])
            self._add("vhtune_thread_switches_total", (*lab, ("kind", "involuntary")), r["invol_switches"])
            self.gauges["vhtune_thread_oncpu_ratio"][lab] = float(r["oncpu_pct"]) / 100.0
            h = self.runq.setdefault(lab, RunqHist())
            h.sum_ns += int(r["runq_ns"])
        for r in hist:
            lab_or_none = ident.get(int(r["tid"]))
            b = int(r["bucket"])
            if lab_or_none is not None and 0 <= b < HIST_BUCKETS:
                self.runq.setdefault(lab_or_none, RunqHist()).buckets[b] += int(r["count"])

    def _taps(self, taps: list[dict[str, Any]], drops: list[dict[str, Any]]) -> None:
        for r in taps:
            base = _labels(tap=r["ifname"], netns=r["netns"])
            for d in ("rx", "tx"):
                self._add("vhtune_tap_packets_total", (*base, ("direction", d)), r[f"{d}_packets"])
                self._add("vhtune_tap_bytes_total", (*base, ("direction", d)), r[f"{d}_bytes"])
            self._add("vhtune_tap_drops_total", base, r["drops"])
        for r in drops:
            lab = _labels(tap=r["ifname"], netns=r.get("netns", "?"), direction=r["direction"], reason=r["reason_name"])
            self._add("vhtune_tap_drops_by_reason_total", lab, r["count"])

    def forget(
        self,
        pids: set[int] | None = None,
        tids: set[int] | None = None,
        taps: set[str] | set[tuple[str, str]] | None = None,
    ) -> None:
        """Drop the series of targets the recorder let go; taps as (netns, name), or a bare name for every netns."""
        pids, tids, taps = pids or set(), tids or set(), taps or set()

        def gone(lab: Labels) -> bool:
            d = dict(lab)
            return (
                ("tid" in d and int(d["tid"]) in tids)
                or ("pid" in d and int(d["pid"]) in pids)
                or ("tap" in d and (d["tap"] in taps or (d.get("netns"), d["tap"]) in taps))
            )

        with self.lock:
            self._drop(gone)
            for tid in tids:
                self._thread_labels.pop(tid, None)

    def prune_exited(self) -> None:
        """Drop the series of pids that no longer exist (update() does this every PRUNE_EVERY intervals)."""
        with self.lock:
            self._drop(_pid_exited)

    def _drop(self, gone: Callable[[Labels], bool]) -> None:
        """Delete every series whose labels ``gone`` names (the caller holds the lock)."""
        for table in (*self.counters.values(), *self.gauges.values()):
            for lab in [lab for lab in table if gone(lab)]:
                del table[lab]
        for lab in [lab for lab in self.runq if gone(lab)]:
            del self.runq[lab]

    def set_findings(self, findings: list[FindingGauge]) -> None:
        with self.lock:
            self.findings = list(findings)

    def set_info(self, **info: str) -> None:
        with self.lock:
            self.info.update(info)


def _pid_exited(lab: Labels) -> bool:
    pid = dict(lab).get("pid")
    return pid is not None and pid.isdigit() and not os.path.exists(f"/proc/{pid}")


def _under(prefix: Labels) -> Callable[[Labels], bool]:
    """Series whose labels start with ``prefix`` (a thread's switches add a "kind" label after its own)."""
    return lambda lab: lab[: len(prefix)] == prefix
