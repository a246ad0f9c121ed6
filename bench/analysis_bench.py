"""Analysis at scale: a synthetic 1 h x 64 VM x 1 s recording → load + analyze (goal < 10 s, < 2 GB RSS) and the
HTML report (goal < 5 s). Anchor measured in the same run: reading every Parquet chunk into pandas with
pyarrow and nothing else (the floor any analysis pays). Each step runs in a fresh child process so its peak RSS
is its own.

    python -m bench analysis [-- --vms 64 --seconds 3600 --keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
step, d, out = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
t0 = time.perf_counter()
extra = {}
if step == "anchor":
    import pyarrow.parquet as pq
    rows = 0
    for f in sorted(d.glob("*/*.parquet")):
        rows += len(pq.read_table(f).to_pandas())
    extra["rows"] = rows
elif step == "analyze":
    from vhtune import api
    rec = api.load(d)
    t1 = time.perf_counter()
    findings = api.analyze(rec)
    extra = {"load_s": t1 - t0, "findings": len(findings), "ids": sorted({f.id for f in findings})}
elif step == "report":
    from vhtune import api
    rec = api.load(d)
    findings = api.analyze(rec)
    t0 = time.perf_counter()
    api.write_report(rec, findings, out, "html")
    extra["bytes"] = Path(out).stat().st_size
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"wall_s": wall, "rss_bytes": rss, **extra}))
"""

GOALS = {"analyze": (10.0, 2 * 1024**3), "report": (5.0, None)}


def _step(step: str, d: Path, out: Path) -> dict[str, Any]:
    p = subprocess.run(
        [sys.executable, "-c", CHILD, step, str(d), str(out)], capture_output=True, text=True, timeout=900, check=True
    )
    return dict(json.loads(p.stdout.strip().splitlines()[-1]))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench analysis")
    ap.add_argument("--vms", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=3600)
    ap.add_argument("--keep", type=Path, default=None, help="write the recording here and keep it")
    a = ap.parse_args(argv)
    from vhtune.analysis.synthetic import FAULTS, SynthSpec, write_synthetic

    with tempfile.TemporaryDirectory(prefix="vhtune-bench-") as tmp:
        d = a.keep or Path(tmp) / "rec"
        faults = {i: f for i, f in enumerate(FAULTS) if i < a.vms}  # a few VMs with each fault, the rest healthy
        t0 = time.perf_counter()
        if not (d / "manifest.json").exists():
            write_synthetic(d, SynthSpec(vms=a.vms, duration_s=a.seconds, faults=faults, cpus=64, nodes=2, seed=1))
        gen_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in d.rglob("*.parquet"))
        anchor = _step("anchor", d, Path(tmp) / "x")
        an = _step("analyze", d, Path(tmp) / "x")
        rep = _step("report", d, Path(tmp) / "report.html")
    aw = float(anchor["wall_s"])
    print(
        f"recording: {a.vms} VMs x {a.seconds} s x 1 s intervals, {anchor['rows']:,} rows, {size / 1e6:.0f} MB "
        f"Parquet (generated in {gen_s:.1f} s)"
    )
    print(f"{'step':<34}{'wall s':>9}{'vs anchor':>11}{'goal s':>8}{'peak RSS MB':>13}{'goal MB':>9}  ok")
    rows = [
        ("anchor: read all chunks (pyarrow)", anchor, None),
        ("load + analyze (all detectors)", an, "analyze"),
        ("HTML report (4 plots)", rep, "report"),
    ]
    ok_all = True
    for name, r, goal in rows:
        wall, rss = float(r["wall_s"]), int(r["rss_bytes"])
        gw, gr = GOALS.get(goal or "", (None, None))
        ok = (gw is None or wall < gw) and (gr is None or rss < gr)
        ok_all &= ok
        goal_s = f"{gw:>8.0f}" if gw else " " * 8
        goal_mb = f"{gr / 1e6:>9.0f}" if gr else " " * 9
        print(f"{name:<34}{wall:>9.2f}{wall / aw:>10.1f}x{goal_s}{rss / 1e6:>13.0f}{goal_mb}  {'yes' if ok else 'NO'}")
    print(
        f"findings: {an['findings']} ({', '.join(an['ids'])}); load alone {float(an['load_s']):.2f} s; "
        f"report {int(rep['bytes']) / 1e3:.0f} kB"
    )
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
