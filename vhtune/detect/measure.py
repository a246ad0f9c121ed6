"""The metric a finding's fix should move, measured on any recording of the same data path: what a closed loop
(`vhtune tune auto`: record → analyze → apply → record again) compares before and after.

``measure(rec, finding)`` finds the finding's subject in ``rec`` (the same thread by (pid, tid), else by name on the
same path; the same tap; the same path) and returns the target metric over the whole recording, which way is better,
and the path's packet rate (a fix must not buy its metric with throughput).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vhtune.detect.finding import Finding

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording

# finding id → (metric, better, where it is measured)
TARGETS: dict[str, tuple[str, str, str]] = {
    "backend-cpu-contention": ("runq_pct", "lower", "thread"),
    "backend-wakeup-latency": ("runq_p99_us", "lower", "thread"),
    "backend-thread-saturated": ("pps", "higher", "path"),
    "kick-storm": ("kicks_per_pkt", "lower", "path"),
    "interrupt-storm": ("calls_per_pkt", "lower", "path"),
    "small-batches": ("burst", "higher", "path"),
    "tap-drops": ("drops_per_s", "lower", "tap"),
    "rx-ring-starved": ("drops_per_s", "lower", "path"),
    "cross-numa": ("pps", "higher", "path"),
    "vcpu-halt-polling": ("vcpu_waited_share", "lower", "path"),
}


@dataclass
class Measurement:
    finding: str
    metric: str
    value: float | None  # None: the subject is not in this recording
    better: str  # "lower" / "higher"
    pps: float | None  # the data path's packets per second over the recording

    def improvement(self, after: Measurement) -> float | None:
        """Relative gain of ``after`` over this one (0.25 = 25 % better), None if either is missing."""
        if self.value is None or after.value is None:
            return None
        if self.better == "lower":
            return (self.value - after.value) / self.value if self.value else None
        return (after.value - self.value) / self.value if self.value else None


def _ratio(num: pd.Series | np.ndarray, den: pd.Series | np.ndarray) -> float | None:
    d = float(den.sum())
    return float(num.sum()) / d if d > 0 else None


def _path_value(rec: Recording, path: str, metric: str) -> tuple[float | None, float | None]:
    pm = rec.path_metrics
    if not len(pm) or path not in set(pm.index.get_level_values("path")):
        return None, None
    g = pm.xs(path, level="path")
    span = float(g["interval_s"].sum())
    pps = float(g["packets"].sum()) / span if span > 0 else None
    values = {
        "pps": lambda: pps,
        "kicks_per_pkt": lambda: _ratio(g["kicks"], g["packets"]),
        "calls_per_pkt": lambda: _ratio(np.maximum(g["calls"], np.maximum(g["irqs"], g["injections"])), g["packets"]),
        "burst": lambda: (
            _ratio(g["packets"], g["bursts"])
            if g["bursts"].sum() > 0
            else _ratio(g["packets"], np.maximum(g["backend_wakeups"], g["calls"]))
        ),
        "drops_per_s": lambda: float((g["tap_drops"] + g["no_rx_buffer_drops"]).sum()) / span if span else None,
        "vcpu_waited_share": lambda: _ratio(g["vcpu_waited"], g["vcpu_wakeups"]),
    }
    return values[metric](), pps


def _thread_rows(rec: Recording, f: Finding) -> pd.DataFrame:
    tm = rec.thread_metrics
    tid, pid = f.details.get("tid"), f.details.get("pid")
    rows = tm[tm["tid"] == tid] if tid is not None else tm.iloc[0:0]
    if pid is not None:  # a thread is (pid, tid): the tid may have come back under another process
        rows = rows[rows["pid"] == pid]
    if not len(rows):  # restarted: the same thread name on the same path
        rows = tm[(tm["comm"] == f.details.get("comm")) & (tm["path"] == f.path)]
    return rows


def measure(rec: Recording, f: Finding) -> Measurement:
    metric, better, where = TARGETS[f.id]
    value: float | None = None
    if where == "thread":
        rows = _thread_rows(rec, f)
        if len(rows):
            if metric == "runq_pct":  # time-weighted: share of the recorded time spent waiting
                value = float(rows["runq_pct"].mul(rows["interval_s"]).sum()) / float(rows["interval_s"].sum())
            else:
                value = float(rows["runq_p99_us"].median())
        _, pps = _path_value(rec, f.path, "pps")
    elif where == "tap":
        t = rec.taps[rec.taps["ifname"] == f.details.get("ifname")]
        if f.details.get("netns") is not None:  # one name may live in several netns (one VM per netns)
            t = t[t["netns"] == f.details["netns"]]
        if len(t) and float(t["interval_s"].sum()) > 0:
            value = float(t["drops"].sum()) / float(t["interval_s"].sum())
        _, pps = _path_value(rec, f.path, "pps")
    else:
        value, pps = _path_value(rec, f.path, metric)
    return Measurement(f.id, metric, value, better, pps)
