"""Derived metrics: per thread, per data path ("path", one VM's) and per tap, per interval and summarised.

All vectorized (groupby over the whole recording), so a 1 h x 64 VM recording takes seconds, not minutes.
Column meanings are documented in docs/analysis.md; the ones detectors use:

- thread_metrics: oncpu_pct, runq_pct (time runnable-but-waiting, % of the interval), runq_p50_us/p99_us
  (per interval, from the recorder), wakeups_per_s, invol_per_s, path.
- thread_summary (one row per thread): mean/p90 on-CPU %, share of intervals ≥ 90 % on-CPU, mean runq %,
  run-queue p50/p99 over the whole recording (merged log2 histograms), CPUs allowed, NUMA node.
- path_metrics (per path and interval): packets, pps, kicks, calls, injections, irqs, and the ratios
  kicks_per_pkt, calls_per_pkt, irqs_per_pkt, burst (packets per back-end batch or wake-up), drops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from vhtune.analysis.topology import BACKEND_ROLES
from vhtune.discover.model import tap_ref

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording

SATURATED_PCT = 90.0  # a thread at ≥ 90 % of one CPU has no headroom left (ARCHITECTURE.md)


def _labels(s: pd.Series) -> pd.Series:
    """Mapped path names, "" where none (a map with no hit comes back as float NaN, not as strings)."""
    return s.astype("object").where(s.notna(), "").astype("string")


def _tap_path_col(rec: Recording, df: pd.DataFrame) -> pd.Series:
    """The path of each (netns, ifname) row: the path holding that very tap, else the path its name is on."""
    by_key, by_name = rec.topology.path_of_tap_key(), rec.topology.path_of_tap()
    # Joined into one string column and resolved once per distinct tap: a Series of (netns, ifname) tuples
    # costs ~1 s per 4 M rows in Python.
    keys = df["netns"].astype(str) + "\0" + df["ifname"].astype(str)
    path_of: dict[str, str | None] = {}
    for key in keys.unique():
        netns, _, ifname = str(key).partition("\0")
        path_of[str(key)] = by_key.get((netns, ifname), by_name.get(ifname))
    return _labels(keys.map(path_of))


def thread_key(pid: pd.Series, tid: pd.Series) -> pd.Series:
    """One int64 per thread (pid, tid): a thread is both (a tid can come back under another pid), and one
    integer column groups and maps as fast as the tid alone did."""
    return pid.astype("int64") * (1 << 32) + tid.astype("int64")


def _path_col(rec: Recording, df: pd.DataFrame, pid_col: str = "pid", tid_col: str | None = None) -> pd.Series:
    by_pid = rec.topology.path_of_pid()
    out = df[pid_col].map(by_pid)
    if tid_col is not None:
        by_thread = {(p << 32) + t: path for (p, t), path in rec.topology.path_of_thread().items()}
        out = thread_key(df[pid_col], df[tid_col]).map(by_thread).fillna(out)
    return _labels(out)


def hist_quantiles(hist: pd.DataFrame, by: str | list[str], qs: tuple[float, ...] = (0.5, 0.99)) -> pd.DataFrame:
    """Quantiles of merged log2 histograms (columns by, bucket, count) → one row per ``by``, in ns.

    The value is the upper edge 2**(bucket+1) of the bucket holding the quantile (as the recorder does).
    """
    if not len(hist):
        return pd.DataFrame(columns=[f"q{q}" for q in qs], dtype="float64")
    keys = [by] if isinstance(by, str) else list(by)
    h = hist.groupby([*keys, "bucket"], as_index=False, sort=True)["count"].sum()
    h["cum"] = h.groupby(by)["count"].cumsum()
    total = h.groupby(by)["count"].transform("sum")
    out = {}
    for q in qs:
        hit = h[h["cum"] >= q * total]
        out[f"q{q}"] = np.power(2.0, hit.groupby(keys)["bucket"].first() + 1)
    return pd.DataFrame(out)


def thread_metrics(rec: Recording) -> pd.DataFrame:
    t = rec.threads
    iv = t["interval_s"].where(t["interval_s"] > 0)
    out = pd.DataFrame(
        {
            "pid": t["pid"],
            "tid": t["tid"],
            "comm": t["comm"],
            "role": t["role"],
            "path": _path_col(rec, t, "pid", "tid"),
            "oncpu_pct": t["oncpu_pct"],
            "runq_pct": 100.0 * t["runq_ns"] / (iv * 1e9),
            "runq_p50_us": t["runq_p50_ns"] / 1e3,
            "runq_p99_us": t["runq_p99_ns"] / 1e3,
            "wakeups_per_s": t["wakeups"] / iv,
            "invol_per_s": t["invol_switches"] / iv,
            "migrations": t["migrations"],
            "wakeups": t["wakeups"],
            "interval_s": t["interval_s"],
        },
        index=t.index,
    )
    return out


def time_weighted_mean(pct: pd.Series, interval_s: pd.Series, by: pd.Series) -> pd.Series:
    """Per ``by``: sum(pct x seconds) / sum(seconds) over the intervals with a value (NaN: none)."""
    w = interval_s.where(pct.notna())
    return (pct * w).groupby(by).sum(min_count=1) / w.groupby(by).sum(min_count=1)


def thread_summary(rec: Recording) -> pd.DataFrame:
    tm = rec.thread_metrics
    cols = [
        "tid",
        "pid",
        "comm",
        "role",
        "path",
        "intervals",
        "oncpu_pct",
        "oncpu_p90",
        "saturated_share",
        "runq_pct",
        "runq_p50_us",
        "runq_p99_us",
        "wakeups_per_s",
        "cpus",
        "node",
    ]
    if not len(tm):
        return pd.DataFrame(columns=cols)
    # One row per thread (pid, tid): a tid that came back under another pid is another thread.
    key = thread_key(tm["pid"], tm["tid"]).rename("thread")
    g = tm.groupby(key, sort=True)
    iv = tm["interval_s"].where(tm["interval_s"] > 0)
    s = pd.DataFrame(
        {
            "pid": g["pid"].first(),
            "tid": g["tid"].first(),
            "comm": g["comm"].last(),
            "role": g["role"].last(),
            "path": g["path"].last(),
            "intervals": g.size(),
            # Intervals differ in length (a stalled loop stretches one): time-weighted, not a mean of per-interval %.
            "oncpu_pct": time_weighted_mean(tm["oncpu_pct"], iv, key),
            "oncpu_p90": g["oncpu_pct"].quantile(0.9),
            "saturated_share": (tm["oncpu_pct"] >= SATURATED_PCT).groupby(key).mean(),
            "runq_pct": time_weighted_mean(tm["runq_pct"], iv, key),
            "wakeups_per_s": tm["wakeups"].where(iv.notna()).groupby(key).sum(min_count=1)
            / iv.groupby(key).sum(min_count=1),
        }
    )
    hist = rec.runq_hist
    if len(hist):
        h = hist.reset_index()
        q = hist_quantiles(h.assign(thread=thread_key(h["pid"], h["tid"])), "thread")
        s["runq_p50_us"] = q["q0.5"].reindex(s.index) / 1e3
        s["runq_p99_us"] = q["q0.99"].reindex(s.index) / 1e3
    else:
        s["runq_p50_us"] = g["runq_p50_us"].median()
        s["runq_p99_us"] = g["runq_p99_us"].max()
    topo = rec.topology
    info = [topo.thread(int(t), int(p)) for p, t in zip(s["pid"], s["tid"], strict=True)]
    s["cpus"] = [tuple(i.get("affinity") or ()) for i in info]
    s["node"] = [i.get("numa_node") for i in info]
    return s.reset_index(drop=True)[cols]


def _sum_by(df: pd.DataFrame, cols: list[str], rename: dict[str, str] | None = None) -> pd.DataFrame:
    if not len(df):
        return pd.DataFrame(columns=[*(rename or {c: c for c in cols}).values()], dtype="float64")
    g = df[df["path"] != ""].groupby(["ts", "path"])[cols].sum()
    return g.rename(columns=rename or {})


PATH_COLUMNS = [
    "interval_s",
    "packets",
    "pps",
    "bytes",
    "tap_packets",
    "backend_packets",
    "kicks",
    "calls",
    "injections",
    "irqs",
    "kicks_per_pkt",
    "calls_per_pkt",
    "irqs_per_pkt",
    "bursts",
    "kicks_per_burst",
    "calls_per_burst",
    "backend_wakeups",
    "burst",
    "backend_oncpu_pct",
    "backend_runq_pct",
    "tap_drops",
    "no_rx_buffer_drops",
    "tap_full_drops",
    "vcpu_wakeups",
    "vcpu_waited",
    "vcpu_polled",
]


def path_metrics(rec: Recording) -> pd.DataFrame:
    """One row per (ts, path): the data path's rates and ratios in that interval."""
    parts: list[pd.DataFrame] = []
    taps = rec.taps
    if len(taps):
        t = taps.assign(path=_tap_path_col(rec, taps))
        t = t.assign(tap_packets=t["rx_packets"] + t["tx_packets"], bytes=t["rx_bytes"] + t["tx_bytes"])
        parts.append(_sum_by(t, ["tap_packets", "bytes", "drops"], {"drops": "tap_drops"}))
    bq = rec.backend_queues
    if len(bq):
        b = bq.assign(path=_path_col(rec, bq))
        parts.append(
            _sum_by(
                b,
                ["packets", "bursts", "wakeups", "drops_no_rx_buffer", "drops_tap_full", "kicks", "calls"],
                {
                    "packets": "backend_packets",
                    "kicks": "backend_kicks",
                    "calls": "backend_calls",
                    "wakeups": "backend_wakeups_ctl",
                    "drops_no_rx_buffer": "no_rx_buffer_drops",
                    "drops_tap_full": "tap_full_drops",
                },
            )
        )
    q = rec.queues
    if len(q):
        qq = q.assign(path=_path_col(rec, q))
        kick = qq[qq["role"] == "kick"]
        if len(kick):
            k = _sum_by(kick, ["writes", "reads"])
            parts.append(pd.DataFrame({"kicks": np.maximum(k["writes"], k["reads"])}))
        call = qq[qq["role"] == "call"]
        if len(call):
            parts.append(_sum_by(call, ["writes"], {"writes": "calls"}))
        parts.append(_sum_by(qq, ["injections"]))
    irq = rec.irqs
    if len(irq):
        by_pid = rec.topology.path_of_pid()
        i = irq[(irq["kind"] == "msi") | (irq["level"] == 1)]
        path = _labels(i["via_pid"].map(by_pid).fillna(i["pid"].map(by_pid)))
        parts.append(_sum_by(i.assign(path=path), ["count"], {"count": "irqs"}))
    tm = rec.thread_metrics
    be = tm[tm["role"].isin(BACKEND_ROLES) & (tm["path"] != "")]
    if len(be):
        g = be.groupby(["ts", "path"])
        parts.append(
            pd.DataFrame(
                {
                    "backend_oncpu_pct": g["oncpu_pct"].max(),
                    "backend_runq_pct": g["runq_pct"].max(),
                    "backend_wakeups": g["wakeups"].sum(),
                }
            )
        )
    vw = rec.vcpu_wakeups
    if len(vw):
        v = vw.assign(path=_path_col(rec, vw, "pid", "tid"))
        parts.append(
            _sum_by(v, ["wakeups", "waited", "polled"], {c: f"vcpu_{c}" for c in ("wakeups", "waited", "polled")})
        )
    if not parts:
        return pd.DataFrame(columns=PATH_COLUMNS, index=pd.MultiIndex.from_arrays([[], []], names=["ts", "path"]))
    m = pd.concat(parts, axis=1).sort_index()
    m = m.T.groupby(level=0).sum(min_count=1).T if m.columns.duplicated().any() else m
    for c in PATH_COLUMNS:
        if c not in m.columns:
            m[c] = np.nan
    num = [c for c in m.columns if c not in ("backend_oncpu_pct", "backend_runq_pct")]
    m[num] = m[num].astype("float64").fillna(0.0)
    iv = _interval_by_ts(rec)
    m["interval_s"] = iv.reindex(m.index.get_level_values("ts")).fillna(rec.interval_s).to_numpy()
    for col in ("kicks", "calls"):  # the back-end's own count when eBPF did not know the eventfd's role
        if f"backend_{col}" in m.columns:
            m[col] = np.maximum(m[col], m[f"backend_{col}"])
    use_backend = m["backend_packets"] > 0
    m["packets"] = np.where(use_backend, m["backend_packets"], m["tap_packets"])
    pk = m["packets"].where(m["packets"] > 0)
    m["pps"] = m["packets"] / m["interval_s"]
    m["kicks_per_pkt"] = m["kicks"] / pk
    m["calls_per_pkt"] = m["calls"] / pk
    m["irqs_per_pkt"] = np.maximum(m["irqs"], m["injections"]) / pk
    if "backend_wakeups_ctl" in m.columns:
        m["backend_wakeups"] = np.where(m["backend_wakeups_ctl"] > 0, m["backend_wakeups_ctl"], m["backend_wakeups"])
    per_burst = m["packets"] / m["bursts"].where(m["bursts"] > 0)
    per_wake = m["packets"] / m["backend_wakeups"].where(m["backend_wakeups"] > 0)
    m["burst"] = per_burst.fillna(per_wake)
    nb = m["bursts"].where(m["bursts"] > 0)
    m["kicks_per_burst"] = m["kicks"] / nb
    m["calls_per_burst"] = m["calls"] / nb
    return m[PATH_COLUMNS]


def _interval_by_ts(rec: Recording) -> pd.Series:
    for df in (rec.threads, rec.taps, rec.queues):
        if len(df):
            return df.groupby(level=0)["interval_s"].max()
    return pd.Series(dtype="float64")


def tap_metrics(rec: Recording) -> pd.DataFrame:
    t = rec.taps
    iv = t["interval_s"].where(t["interval_s"] > 0)
    # Offered to the tap: on this kernel a full tun ring makes net_dev_xmit return an error (tx_errors) while
    # net_dev_queue saw the packet (tx_queued); elsewhere xmit may report success and drop after.
    offered = np.maximum(t["tx_queued"], t["tx_packets"] + t["tx_errors"])
    pk = (t["rx_packets"] + offered).astype("float64")
    return pd.DataFrame(
        {
            "ifname": t["ifname"],
            "netns": t["netns"],
            "path": _tap_path_col(rec, t),
            "rx_pps": t["rx_pps"],
            "tx_pps": t["tx_pps"],
            "drops": t["drops"],
            "drops_per_s": t["drops"] / iv,
            "drop_pct": 100.0 * t["drops"] / pk.where(pk > 0),
            "interval_s": t["interval_s"],
        },
        index=t.index,
    )


def drops_by_reason(rec: Recording) -> pd.DataFrame:
    """Total drops per (where, direction, reason) over the recording: kernel (tap) and back-end counters."""
    rows: list[pd.DataFrame] = []
    d = rec.tap_drops
    if len(d):
        g = pd.DataFrame(d.groupby(["netns", "ifname", "direction", "reason_name"], as_index=False)["count"].sum())
        g["where"] = [tap_ref(str(n), str(i)) for n, i in zip(g["netns"], g["ifname"], strict=True)]
        g = g.drop(columns=["netns", "ifname"]).rename(columns={"reason_name": "reason"})
        rows.append(g[["where", "direction", "reason", "count"]].assign(source="kernel"))
    bq = rec.backend_queues
    if len(bq):
        for col, reason in (
            ("drops_no_rx_buffer", "NO_RX_BUFFER"),
            ("drops_tap_full", "TAP_FULL"),
            ("drops_other", "OTHER"),
        ):
            g = pd.DataFrame(bq.groupby(["pid", "dir"], as_index=False)[col].sum())
            g = g[g[col] > 0]
            if len(g):
                rows.append(
                    pd.DataFrame(
                        {
                            "where": "backend-" + g["pid"].astype(str),
                            "direction": g["dir"],
                            "reason": reason,
                            "count": g[col],
                            "source": "backend",
                        }
                    )
                )
    if not rows:
        return pd.DataFrame(columns=["where", "direction", "reason", "count", "source"])
    out = pd.concat(rows, ignore_index=True)
    return out.sort_values("count", ascending=False, ignore_index=True)


def queue_metrics(rec: Recording) -> pd.DataFrame:
    """Per (ts, path, pid, queue): kicks and calls per second from the eventfd probes (queues with known roles)
    and, where the back-end's counters exist, packets, pps and packets per burst of that virtqueue."""
    cols = ["path", "pid", "queue", "kicks_per_s", "calls_per_s", "injections_per_s", "pps", "burst", "drops"]
    parts = []
    q = rec.queues
    q = q[q["role"].isin(("kick", "call")) & (q["queue"] >= 0)]
    if len(q):
        iv = q["interval_s"].where(q["interval_s"] > 0)
        n = np.maximum(q["writes"], q["reads"])
        parts.append(
            pd.DataFrame(
                {
                    "path": _path_col(rec, q),
                    "pid": q["pid"],
                    "queue": q["queue"],
                    "kicks_per_s": (n / iv).where(q["role"] == "kick", 0.0),
                    "calls_per_s": (q["writes"] / iv).where(q["role"] == "call", 0.0),
                    "injections_per_s": q["injections"] / iv,
                },
                index=q.index,
            )
        )
    bq = rec.backend_queues
    if len(bq):
        iv = bq["interval_s"].where(bq["interval_s"] > 0)
        parts.append(
            pd.DataFrame(
                {
                    "path": _path_col(rec, bq),
                    "pid": bq["pid"],
                    "queue": bq["queue"],
                    "pps": bq["packets"] / iv,
                    "burst": bq["packets"] / bq["bursts"].where(bq["bursts"] > 0),
                    "drops": bq["drops_no_rx_buffer"] + bq["drops_tap_full"] + bq["drops_other"],
                },
                index=bq.index,
            )
        )
    if not parts:
        return pd.DataFrame(columns=cols)
    df = pd.concat(parts)
    keys = ["ts", "path", "pid", "queue"]
    agg = df.groupby(keys, dropna=False).agg(
        {c: ("sum" if c != "burst" else "mean") for c in cols if c not in ("path", "pid", "queue") and c in df.columns}
    )
    return agg.reset_index(level=["path", "pid", "queue"]).reindex(columns=cols)
