"""The report's plots (matplotlib, Agg backend, PNG bytes): per-path throughput, back-end on-CPU and run-queue
latency, notification and interrupt rates, drops. At most ``MAX_LINES`` paths per plot (those with findings
first, then the busiest), and long recordings are averaged into at most ``MAX_POINTS`` points per line."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.finding import Finding

MAX_LINES = 8
MAX_POINTS = 600


def chosen_paths(rec: Recording, findings: list[Finding]) -> list[str]:
    pm = rec.path_metrics
    if not len(pm):
        return []
    busiest = pm.groupby(level="path")["packets"].sum().sort_values(ascending=False).index
    out: list[str] = []
    for name in [f.path for f in findings if f.path] + [str(n) for n in busiest]:
        if name not in out:
            out.append(name)
    return out[:MAX_LINES]


def _thin(s: pd.Series) -> pd.Series:
    if len(s) <= MAX_POINTS:
        return s
    span = (s.index.max() - s.index.min()) / MAX_POINTS
    return s.resample(span).mean().dropna()


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _lines(ax: plt.Axes, frame: pd.DataFrame, col: str, paths: list[str], scale: float = 1.0) -> bool:
    drew = False
    for p in paths:
        try:
            s = frame.xs(p, level="path")[col] * scale
        except KeyError:
            continue
        s = _thin(s.dropna())
        if len(s):
            ax.plot(s.index, s.to_numpy(), label=p, linewidth=1.2)
            drew = True
    return drew


def _finish(fig: plt.Figure, axes: list[plt.Axes], empty: str) -> None:
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7, loc="upper right")
        else:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.grid(alpha=0.3)
    for ax in axes:
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    fig.autofmt_xdate()
    fig.tight_layout()


def throughput(rec: Recording, paths: list[str]) -> bytes:
    fig, ax = plt.subplots(figsize=(9, 3))
    _lines(ax, rec.path_metrics, "pps", paths, 1e-3)
    ax.set_title("Throughput per VM (packets through tap or back-end)")
    ax.set_ylabel("kpps")
    _finish(fig, [ax], "no packets recorded")
    return _png(fig)


def backend_cpu(rec: Recording, paths: list[str]) -> bytes:
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    tm = rec.thread_metrics
    be = tm[tm["role"].isin(("vhost-worker", "backend-worker")) & tm["path"].isin(paths)]
    n_pids = be.groupby("tid")["pid"].nunique()
    reused = set(n_pids[n_pids > 1].index)
    for (path, pid, tid), g in be.groupby(["path", "pid", "tid"]):  # a thread is (pid, tid): a tid may be reused
        label = f"{path} {pid}/{tid}" if tid in reused else f"{path} {tid}"
        a1.plot(_thin(g["oncpu_pct"]).index, _thin(g["oncpu_pct"]).to_numpy(), label=label, linewidth=1.2)
        p99 = _thin(g["runq_p99_us"].dropna())
        if len(p99):
            a2.plot(p99.index, p99.to_numpy(), label=label, linewidth=1.2)
    a1.set_title("Back-end threads: on-CPU")
    a1.set_ylabel("% of one CPU")
    a2.set_title("Back-end threads: run-queue wait p99")
    a2.set_ylabel("µs")
    if a2.lines:
        a2.set_yscale("log")
    _finish(fig, [a1, a2], "no back-end thread recorded")
    return _png(fig)


def notifications(rec: Recording, paths: list[str]) -> bytes:
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    pm = rec.path_metrics
    rate = pm.assign(
        kicks_s=pm["kicks"] / pm["interval_s"],
        calls_s=pm[["calls", "irqs", "injections"]].max(axis=1) / pm["interval_s"],
    )
    _lines(a1, rate, "kicks_s", paths)
    _lines(a2, rate, "calls_s", paths)
    a1.set_title("Kicks (guest → back-end notifications)")
    a1.set_ylabel("/s")
    a2.set_title("Calls / interrupt injections (back-end → guest)")
    a2.set_ylabel("/s")
    _finish(fig, [a1, a2], "no notification eventfds with known roles")
    return _png(fig)


def drops(rec: Recording, paths: list[str]) -> bytes:
    fig, ax = plt.subplots(figsize=(9, 3))
    pm = rec.path_metrics
    d = pm.assign(drops_s=(pm["tap_drops"] + pm["no_rx_buffer_drops"]) / pm["interval_s"])
    _lines(ax, d, "drops_s", paths)
    ax.set_title("Drops (tap kfree_skb + back-end, per second)")
    ax.set_ylabel("/s")
    _finish(fig, [ax], "no drops")
    return _png(fig)


PLOTS = {
    "throughput": throughput,
    "backend-cpu": backend_cpu,
    "notifications": notifications,
    "drops": drops,
}


def render_all(rec: Recording, findings: list[Finding]) -> dict[str, bytes]:
    paths = chosen_paths(rec, findings)
    return {name: fn(rec, paths) for name, fn in PLOTS.items()}
