"""One interval's ``Deltas`` → rows of the recording tables (see vhtune/recording_tables.py)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from vhtune.probes.layouts import LOST_NAMES
from vhtune.probes.maps import Deltas
from vhtune.probes.reasons import reason_name
from vhtune.probes.targets import TargetSet

Rows = dict[str, list[dict[str, Any]]]


def hist_quantile(counts: list[int], q: float) -> float:
    """Upper edge (2**(b+1) ns) of the log2 bucket holding quantile ``q``; NaN when empty."""
    total = sum(counts)
    if total == 0:
        return math.nan
    need = q * total
    run = 0
    for b, c in enumerate(counts):
        run += c
        if run >= need:
            return float(2 ** (b + 1))
    return float(2 ** len(counts))


def to_rows(d: Deltas, targets: TargetSet, ts: pd.Timestamp, interval_s: float) -> Rows:
    rows: Rows = {}
    thr = rows.setdefault("threads", [])
    hist_rows = rows.setdefault("runq_hist", [])
    for tid, c in d.threads.items():
        t = targets.threads.get(tid)
        if t is None:
            continue
        h = d.hist.get(tid, [])
        thr.append(
            {
                "ts": ts,
                "interval_s": interval_s,
                "pid": t.pid,
                "tid": tid,
                "comm": t.comm,
                "role": t.role,
                **{
                    k: c[k]
                    for k in (
                        "oncpu_ns",
                        "runq_ns",
                        "runq_count",
                        "wakeups",
                        "vol_switches",
                        "invol_switches",
                        "migrations",
                    )
                },
                "oncpu_pct": 100.0 * c["oncpu_ns"] / (interval_s * 1e9) if interval_s > 0 else math.nan,
                "runq_p50_ns": hist_quantile(h, 0.5),
                "runq_p99_ns": hist_quantile(h, 0.99),
            }
        )
        for b, n in enumerate(h):
            if n:
                hist_rows.append({"ts": ts, "pid": t.pid, "tid": tid, "bucket": b, "lo_ns": 2**b, "count": n})
    rows["competitors"] = [{"ts": ts, **c} for c in d.competitors]
    drops_by_tap: dict[tuple[str, str], int] = {}  # (netns, ifname): one name may live in several netns
    for dr in d.drops:
        k = (dr["netns"], dr["ifname"])
        drops_by_tap[k] = drops_by_tap.get(k, 0) + dr["count"]
    rows["tap_drops"] = [{"ts": ts, **dr, "reason_name": reason_name(dr["reason"])} for dr in d.drops]
    taps = rows.setdefault("taps", [])
    for tkey, c in d.taps.items():
        taps.append(
            {
                "ts": ts,
                "interval_s": interval_s,
                "ifname": tkey[1],
                "netns": tkey[0],
                **c,
                "drops": drops_by_tap.get(tkey, 0),
                "rx_pps": c["rx_packets"] / interval_s if interval_s > 0 else math.nan,
                "tx_pps": c["tx_packets"] / interval_s if interval_s > 0 else math.nan,
            }
        )
    queues = rows.setdefault("queues", [])
    for key, c in d.fds.items():
        f = targets.fds.get(key)
        queues.append(
            {
                "ts": ts,
                "interval_s": interval_s,
                "pid": key[0],
                "fd": key[1],
                "role": f.role if f else "eventfd",
                "queue": f.queue if f and f.queue is not None else -1,
                "eventfd_id": f.eventfd_id if f and f.eventfd_id is not None else -1,
                **c,
            }
        )
    rows["irqs"] = [
        {
            "ts": ts,
            **{
                **i,
                "via_pid": -1 if i["via_pid"] is None else i["via_pid"],
                "via_fd": -1 if i["via_fd"] is None else i["via_fd"],
            },
        }
        for i in d.irqs
    ]
    rows["vcpu_wakeups"] = [{"ts": ts, **w} for w in d.wakes]
    rows["vhost_events"] = [{"ts": ts, **v} for v in d.vhost]
    lost = {n: d.lost.get(n, 0) for n in LOST_NAMES if n != "reserved"}
    rows["lost"] = [{"ts": ts, "total": sum(lost.values()), **lost}]
    return rows
