"""A recording loaded for analysis: its manifest, one time-indexed pandas frame per table, its topology.

Every table frame has a ``DatetimeIndex`` named ``ts`` (the interval's end, UTC) and the schema's other
columns (vhtune/recording_tables.py), so ``rec.threads.groupby("tid")`` and ``rec.taps.resample("10s")``
work directly. Derived metrics (vhtune/analysis/metrics.py) are computed on first access and cached.
A recording cut short by SIGKILL loads: it has every chunk flushed before the kill.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from vhtune.analysis.topology import (
    Topology,
    add_backend_tunables,
    add_counted_backends,
    add_recorded_taps,
    from_snapshot,
)
from vhtune.errors import RecordingError
from vhtune.record.backend_table import read_backend_queues
from vhtune.record.reader import read_manifest, read_table
from vhtune.recording_tables import RECORDING_TABLES

VM_COLUMNS = [
    "path",
    "frontend_pids",
    "backend_pid",
    "backend_kind",
    "backend_tids",
    "vcpu_tids",
    "taps",
    "memory_nodes",
    "tunables",
]


def _indexed(df: pd.DataFrame) -> pd.DataFrame:
    out = df.set_index("ts")
    out.index.name = "ts"
    return out


def _align(df: pd.DataFrame, grid: pd.Index, manifest: dict[str, Any]) -> pd.DataFrame:
    """Rows sampled on another clock (the back-end's counters) → the recorder interval nearest to each, within
    one interval; rows outside the recorded intervals are dropped. Identical timestamps stay as they are."""
    if not len(df) or not len(grid) or df.index.isin(grid).all():
        return df
    tol = pd.Timedelta(seconds=float(manifest.get("interval_s") or 1.0))
    g = pd.DataFrame({"grid": grid.unique().sort_values()}, index=grid.unique().sort_values())
    left = df.reset_index().sort_values("ts")
    m = pd.merge_asof(left, g, left_on="ts", right_index=True, direction="nearest", tolerance=tol)
    m = m[m["grid"].notna()].drop(columns="ts").rename(columns={"grid": "ts"})
    return _indexed(m[["ts", *df.columns]])


@dataclass
class Recording:
    path: Path
    manifest: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(repr=False)
    topology: Topology = field(repr=False)
    # What load(skip_damaged=True) left out, one sentence per damaged chunk or short table ([]: nothing).
    damaged: list[str] = field(default_factory=list)

    # --- raw tables (time-indexed) ---------------------------------------------------------------------
    @property
    def threads(self) -> pd.DataFrame:
        return self.tables["threads"]

    @property
    def runq_hist(self) -> pd.DataFrame:
        return self.tables["runq_hist"]

    @property
    def competitors(self) -> pd.DataFrame:
        return self.tables["competitors"]

    @property
    def taps(self) -> pd.DataFrame:
        return self.tables["taps"]

    @property
    def tap_drops(self) -> pd.DataFrame:
        return self.tables["tap_drops"]

    @property
    def queues(self) -> pd.DataFrame:
        return self.tables["queues"]

    @property
    def irqs(self) -> pd.DataFrame:
        return self.tables["irqs"]

    @property
    def vcpu_wakeups(self) -> pd.DataFrame:
        return self.tables["vcpu_wakeups"]

    @property
    def lost(self) -> pd.DataFrame:
        return self.tables["lost"]

    @property
    def backend_queues(self) -> pd.DataFrame:
        return self.tables["backend_queues"]

    # --- facts about the recording ---------------------------------------------------------------------
    @property
    def interval_s(self) -> float:
        return float(self.manifest.get("interval_s") or 1.0)

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def lost_events(self) -> int:
        return int(self.lost["total"].sum()) if len(self.lost) else 0

    @property
    def capabilities(self) -> dict[str, Any]:
        """Probe families/variants attached (from the manifest), e.g. {"families": {...}, "variants": {...}}."""
        return dict(self.manifest.get("probes") or {})

    @property
    def span(self) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        idx = self.threads.index if len(self.threads) else self.lost.index
        if not len(idx):
            return None, None
        return idx.min(), idx.max()

    @property
    def intervals(self) -> int:
        return int(self.lost.index.nunique()) if len(self.lost) else int(self.threads.index.nunique())

    @property
    def has_backend_counters(self) -> bool:
        return len(self.backend_queues) > 0

    @property
    def vms(self) -> pd.DataFrame:
        """One row per data path (VM / front-end): who serves it, its threads and taps, its NUMA nodes."""
        rows = [
            {
                "path": p.name,
                "frontend_pids": p.frontend_pids,
                "backend_pid": p.backend_pid,
                "backend_kind": p.backend_kind,
                "backend_tids": p.backend_tids,
                "vcpu_tids": p.vcpu_tids,
                "taps": p.taps,
                "memory_nodes": p.memory_nodes,
                "tunables": p.tunables,
            }
            for p in self.topology.paths
        ]
        return pd.DataFrame(rows, columns=VM_COLUMNS).set_index("path")

    # --- derived metrics (cached) ----------------------------------------------------------------------
    @cached_property
    def thread_metrics(self) -> pd.DataFrame:
        from vhtune.analysis.metrics import thread_metrics

        return thread_metrics(self)

    @cached_property
    def thread_summary(self) -> pd.DataFrame:
        from vhtune.analysis.metrics import thread_summary

        return thread_summary(self)

    @cached_property
    def path_metrics(self) -> pd.DataFrame:
        from vhtune.analysis.metrics import path_metrics

        return path_metrics(self)

    @cached_property
    def queue_metrics(self) -> pd.DataFrame:
        from vhtune.analysis.metrics import queue_metrics

        return queue_metrics(self)

    @cached_property
    def tap_metrics(self) -> pd.DataFrame:
        from vhtune.analysis.metrics import tap_metrics

        return tap_metrics(self)

    @cached_property
    def drops_by_reason(self) -> pd.DataFrame:
        from vhtune.analysis.metrics import drops_by_reason

        return drops_by_reason(self)


def load(directory: Path | str, *, skip_damaged: bool = False) -> Recording:
    """Read recording ``directory``; RecordingError (one sentence + hint) for anything that is not one. With
    ``skip_damaged``, a chunk that cannot be read (a bad disk, a partial copy) is left out and said in
    ``Recording.damaged`` instead: the rest of a long recording stays usable."""
    d = Path(directory)
    if not d.exists():
        raise RecordingError(f"{d} does not exist", hint="give the directory `vhtune record -o DIR` wrote")
    if not d.is_dir():
        raise RecordingError(f"{d} is not a directory", hint="give the directory `vhtune record -o DIR` wrote")
    try:
        manifest = read_manifest(d)
    except RecordingError as exc:
        exc.hint = exc.hint or "give the directory `vhtune record -o DIR` wrote"
        raise
    damaged: list[str] | None = [] if skip_damaged else None
    tables: dict[str, pd.DataFrame] = {}
    for schema in RECORDING_TABLES:
        tables[schema.name] = _indexed(read_table(d, schema.name, damaged))
    tables["backend_queues"] = _align(_indexed(read_backend_queues(d, damaged)), tables["lost"].index, manifest)
    snap = manifest.get("discovery")
    if snap is not None and not isinstance(snap, dict):
        raise RecordingError(f"{d}/manifest.json has a malformed discovery snapshot")
    try:
        topo = from_snapshot(snap, tables["threads"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordingError(f"{d}/manifest.json has a malformed discovery snapshot ({exc})") from None
    bq = tables["backend_queues"]
    add_counted_backends(topo, sorted(int(p) for p in bq["pid"].unique()) if len(bq) else [])
    add_recorded_taps(topo, sorted(tables["taps"]["ifname"].unique()) if len(tables["taps"]) else [])
    tun = d / "backend_tunables.json"
    if tun.exists():
        try:
            add_backend_tunables(topo, json.loads(tun.read_text()))
        except (OSError, ValueError, AttributeError) as exc:
            raise RecordingError(f"{tun} is unreadable ({exc})") from None
    return Recording(d, manifest, tables, topo, damaged or [])
