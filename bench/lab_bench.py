"""Lab scenarios on the reference back-end vs DPDK's vhost PMD, same scenario, same run
(``python -m bench lab [-- --quick] [-- --scenarios a,b]``).

For each scenario it alternates DPDK (the anchor) and vhtune runs, takes medians, prints the ratio (goal for
the guest scenarios ≥ 0.9x: the TCG guest is the limit) and the wall time from start to results (goal < 30 s).
A back-end that fails a scenario is reported with its error, not hidden.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

from vhtune.errors import VhtuneError
from vhtune.lab import scenarios

# scenario → (metric path in the summary, RunOptions overrides)
PLAN: dict[str, tuple[tuple[str, str], dict[str, Any]]] = {
    "guest-pktgen": (("throughput", "pps"), {"duration": 4}),
    "guest-iperf3": (("throughput", "mbps"), {"duration": 4}),
    "guest-ping": (("throughput", "rtt_per_s"), {"duration": 4}),
    "kvm-irqfd": (("throughput", "pps"), {"duration": 10, "count": 5000}),
    "dpdk-sink": (("throughput", "pps"), {"duration": 2}),
    "dpdk-gen": (("throughput", "pps"), {"duration": 2}),
    "dpdk-echo": (("throughput", "round_trips_per_s"), {"duration": 2}),
}


def _one(name: str, backend: str, over: dict[str, Any]) -> tuple[float | None, float, str]:
    metric = PLAN[name][0]
    try:
        s = scenarios.run(name, scenarios.RunOptions(backend=backend, **over))
    except VhtuneError as exc:
        return None, 0.0, str(exc)
    value = s[metric[0]][metric[1]]
    note = "" if s["ok"] else f"checks failed: {[k for k, v in s['checks'].items() if not v]}"
    return (float(value) if value is not None else None), float(s["elapsed_s"]), note


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench lab")
    ap.add_argument("--quick", action="store_true", help="one round instead of three")
    ap.add_argument("--scenarios", default=",".join(PLAN), help="comma-separated subset")
    args = ap.parse_args(argv)
    rounds = 1 if args.quick else 3
    rows = []
    for name in [n for n in args.scenarios.split(",") if n]:
        if name not in PLAN:
            print(f"lab bench: unknown scenario {name!r}")
            return 2
        over = PLAN[name][1]
        vals: dict[str, list[float]] = {"dpdk": [], "vhtune": []}
        walls: dict[str, list[float]] = {"dpdk": [], "vhtune": []}
        notes: dict[str, str] = {}
        for _ in range(rounds):
            for be in ("dpdk", "vhtune"):
                v, wall, note = _one(name, be, over)
                if v is not None:
                    vals[be].append(v)
                    walls[be].append(wall)
                if note:
                    notes[be] = note
        med = {b: (statistics.median(v) if v else None) for b, v in vals.items()}
        ratio = med["vhtune"] / med["dpdk"] if med["vhtune"] and med["dpdk"] else None
        row = {
            "scenario": name,
            "metric": ".".join(PLAN[name][0]),
            "dpdk": med["dpdk"],
            "vhtune": med["vhtune"],
            "ratio": round(ratio, 3) if ratio is not None else None,
            "wall_s_max": max((w for ws in walls.values() for w in ws), default=None),
            "notes": notes,
        }
        rows.append(row)
        print(json.dumps(row))
    print("scenario       metric              dpdk          vhtune        ratio   max wall s")
    for r in rows:
        d_s = f"{r['dpdk']:.1f}" if r["dpdk"] is not None else "-"
        v_s = f"{r['vhtune']:.1f}" if r["vhtune"] is not None else "FAILED"
        ratio_s = f"{r['ratio']:.3f}" if r["ratio"] is not None else "-"
        print(f"{r['scenario']:<14} {r['metric']:<19} {d_s:>12}  {v_s:>12}  {ratio_s:>6}  {r['wall_s_max'] or '-'}")
    return 0
