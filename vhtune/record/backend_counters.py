"""Sampling a vhtune back-end's own counters into a recording's optional ``backend_queues`` table.

The back-end's control socket (``{"cmd":"stats"}``, vhtune/backend/daemon.py) reports cumulative per-queue
counters: packets, bytes, kicks, calls, wake-ups, bursts and drops by reason. ``BackendSampler`` turns two
successive replies into per-interval deltas (the layout of vhtune/record/backend_table.py);
``BackendCounterRecorder`` does that every interval in a thread and writes crash-safe chunks next to the
recorder's tables (``DIR/backend_queues/NNNNNN.parquet``, written to ``.tmp`` then renamed, like
vhtune/record/writer.py), plus the back-end's tunables in ``DIR/backend_tunables.json``.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from vhtune.backend.control_client import ControlClient
from vhtune.counters import counter_deltas
from vhtune.errors import VhtuneError
from vhtune.record.backend_table import BACKEND_QUEUES
from vhtune.record.frames import write_chunk

COUNTERS = ("packets", "bytes", "kicks", "calls", "wakeups", "bursts")


def _drops(q: dict[str, Any]) -> tuple[int, int, int]:
    d = {str(k): int(v) for k, v in (q.get("drops") or {}).items()}
    no_rx = d.pop("no_rx_buffer", 0) + d.pop("no_rx_ring", 0)
    tap_full = d.pop("tap_full", 0)
    return no_rx, tap_full, sum(d.values())


class BackendSampler:
    def __init__(self, control: str) -> None:
        self.client = ControlClient(control, timeout=2.0)
        self.prev: dict[int, dict[str, int]] = {}
        self.tunables: dict[str, Any] = {}
        self.pid = -1

    def sample(self, ts: pd.Timestamp, interval_s: float) -> list[dict[str, Any]]:
        """Rows of deltas since the previous sample ([] on the first call or when the back-end is gone)."""
        try:
            reply = self.client.stats()
        except VhtuneError:
            return []
        self.tunables = {**dict(reply.get("tunables") or {}), "port": str(reply.get("port", ""))}
        pid = self.pid = int(reply.get("pid", -1))
        rows = []
        for q in reply.get("queues", []):
            idx = int(q["index"])
            no_rx, tap_full, other = _drops(q)
            now = {**{k: int(q.get(k, 0)) for k in COUNTERS}, "no_rx": no_rx, "tap_full": tap_full, "other": other}
            before = self.prev.get(idx)
            self.prev[idx] = now
            if before is None:
                continue
            d = counter_deltas(now, before)
            rows.append(
                {
                    "ts": ts,
                    "interval_s": interval_s,
                    "pid": pid,
                    "queue": idx,
                    "dir": str(q.get("dir", "rx" if idx % 2 == 0 else "tx")),
                    **{k: d[k] for k in COUNTERS},
                    "drops_no_rx_buffer": d["no_rx"],
                    "drops_tap_full": d["tap_full"],
                    "drops_other": d["other"],
                }
            )
        return rows


class BackendCounterRecorder:
    """Every ``interval`` seconds, sample each control socket and write one chunk per ``flush_every`` samples."""

    def __init__(self, directory: Path, controls: list[str], interval: float = 0.5, flush_every: int = 2) -> None:
        self.dir = Path(directory)
        self.samplers = [BackendSampler(c) for c in controls]
        self.interval = interval
        self.flush_every = flush_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backend-counters", daemon=True)
        self._rows: list[dict[str, Any]] = []
        self._seq = 0
        self.error: str | None = None

    def start(self) -> None:
        for s in self.samplers:
            s.sample(pd.Timestamp.now(tz="UTC"), 0.0)  # baseline
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._flush()
        tun = {str(s.pid): {"control": s.client.path, **s.tunables} for s in self.samplers if s.pid > 0}
        with contextlib.suppress(OSError):
            (self.dir / "backend_tunables.json").write_text(json.dumps(tun, indent=2) + "\n")

    def _run(self) -> None:
        n = 0
        last = pd.Timestamp.now(tz="UTC")
        while not self._stop.wait(self.interval):
            now = pd.Timestamp.now(tz="UTC")
            for s in self.samplers:
                self._rows.extend(s.sample(now, (now - last).total_seconds()))
            last = now
            n += 1
            if n % self.flush_every == 0:
                self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        self._seq += 1
        path = self.dir / BACKEND_QUEUES.name / f"{self._seq:06d}.parquet"
        try:
            write_chunk(path, BACKEND_QUEUES, self._rows)
        except OSError as exc:
            self.error = f"writing {path} failed: {exc.strerror}"
            return
        self._rows = []
