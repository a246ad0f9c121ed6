"""The interval loop of ``vhtune record``: discover → load probes → every interval read deltas → rows →
buffered chunks; re-discover every few seconds so VMs that come and go are picked up and let go, and at
once when a watched process gains file descriptors (a front-end connecting: see record/fdwatch.py).

Stops on its own after ``duration``, on SIGINT/SIGTERM (clean: last rows flushed, manifest complete), or
on a RecordingError from the writer (disk full: the chunks already written stay valid). Probes are
always detached on the way out.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vhtune.cli.output import to_jsonable
from vhtune.discover.model import Snapshot
from vhtune.errors import RecordingError, UsageError, VhtuneError
from vhtune.probes import ProbeConfig, ProbeMaps, Probes, TargetSet, load
from vhtune.record.backend_counters import BackendCounterRecorder
from vhtune.record.backend_ctl import selected_controls
from vhtune.record.fdwatch import CHECK_EVERY_S, FdTableWatch
from vhtune.record.rows import Rows, to_rows
from vhtune.record.select import Selection, absent_taps, build, parse_tap_spec
from vhtune.record.writer import RecordingWriter

Discover = Callable[[], Snapshot | None]


def default_discover() -> Snapshot | None:
    from vhtune.discover import discover

    return discover(guest_memory_numa=False)


@dataclass
class RecordOptions:
    out: Path
    selection: Selection = field(default_factory=Selection)
    interval: float = 1.0
    duration: float | None = None
    flush_every: int = 5  # intervals per chunk
    refresh_s: float = 5.0  # re-discovery period
    probe_config: ProbeConfig = field(default_factory=ProbeConfig)
    backend_counters: bool = True  # sample vhtune back-ends' control sockets into backend_queues

    def check(self) -> None:
        if not 0.05 <= self.interval <= 3600:
            raise UsageError(f"--interval {self.interval} is out of range", hint="use 0.05 to 3600 seconds")
        if self.duration is not None and self.duration <= 0:
            raise UsageError(f"--duration {self.duration} must be positive")
        if self.flush_every < 1:
            raise UsageError("flush_every must be at least 1")
        for spec in self.selection.taps:
            parse_tap_spec(spec)  # NAME or NETNS/NAME: a bad one fails before anything is compiled
        gone = [p for p in self.selection.pids if not (self.selection.proc / str(p)).is_dir()]
        if gone:
            raise UsageError(f"no process {gone[0]}", hint="check the -p values (ps -e)")


@dataclass
class IntervalView:
    """What the live view shows after each interval."""

    index: int
    elapsed_s: float
    rows: Rows
    lost_total: int
    targets: TargetSet
    warnings: list[str] = field(default_factory=list)  # targets the probes cannot tell apart, for the live view


@dataclass
class Summary:
    out: str
    intervals: int = 0
    elapsed_s: float = 0.0
    stop_reason: str = ""
    start_to_attached_s: float = 0.0
    compile_s: float = 0.0
    probes: dict[str, str] = field(default_factory=dict)
    variants: dict[str, str] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    lost_events: int = 0
    threads: list[dict[str, Any]] = field(default_factory=list)
    taps: list[dict[str, Any]] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    changes: int = 0
    error: str | None = None
    # Per BPF program over the whole run: run_cnt, run_time_ns (non-zero only with kernel.bpf_stats_enabled=1).
    program_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # the manifest's warnings (e.g. taps told apart by name only)


class _Stop:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        # A stop (SIGINT/SIGTERM) after a SIGHUP still wins: the agent reloads on SIGHUP but must stop on a
        # `systemctl stop` that follows a reload before the segment ended.
        if not self.event.is_set() or (self.reason == "SIGHUP" and reason in ("SIGINT", "SIGTERM")):
            self.reason = reason
            self.event.set()


@contextlib.contextmanager
def _signals(stop: _Stop) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {}

    def handler(signum: int, _frame: object) -> None:
        stop.set(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        saved[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


def _headers_note() -> dict[str, str]:
    build_link = Path(f"/lib/modules/{platform.release()}/build")
    try:
        target = os.readlink(build_link)
    except OSError:
        target = "absent"
    return {"kernel": platform.release(), "headers": target}


class _BackgroundLoad:
    """``load()`` in a thread; ``result()`` waits for it, ``discard()`` waits and closes what it made."""

    def __init__(self, config: ProbeConfig) -> None:
        self._out: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(config,), name="vhtune-probe-load", daemon=True)
        self._thread.start()

    def _run(self, config: ProbeConfig) -> None:
        try:
            self._out["probes"] = load(config)
        except BaseException as exc:
            self._out["error"] = exc

    def result(self) -> Probes:
        self._thread.join()
        if "error" in self._out:
            raise self._out.pop("error")
        probes: Probes = self._out.pop("probes")
        return probes

    def discard(self) -> None:
        self._thread.join()
        probes = self._out.pop("probes", None)
        if probes is not None:
            probes.close()


class Recorder:
    def __init__(
        self,
        opts: RecordOptions,
        *,
        discover: Discover = default_discover,
        on_interval: Callable[[IntervalView], None] | None = None,
    ) -> None:
        opts.check()
        self.opts = opts
        self.discover = discover
        self.on_interval = on_interval
        self.stop = _Stop()
        self.summary = Summary(out=str(opts.out))
        self._acc: dict[str, dict[Any, dict[str, Any]]] = {"threads": {}, "taps": {}, "queues": {}}

    def _snapshot(self) -> Snapshot | None:
        try:
            return self.discover()
        except VhtuneError:
            return None  # a failed refresh keeps the previous targets

    def run(self) -> Summary:
        # Handlers first: a Ctrl-C during discovery or the compile becomes a clean stop after attach.
        with _signals(self.stop):
            return self._run()

    def _run(self) -> Summary:
        t_start = time.monotonic()
        writer = RecordingWriter(  # first: a bad -o fails before anything is compiled
            self.opts.out,
            {
                "host": platform.node(),
                "interval_s": self.opts.interval,
                "flush_every": self.opts.flush_every,
                "selection": {
                    "pids": list(self.opts.selection.pids),
                    "all": self.opts.selection.all,
                    "taps": list(self.opts.selection.taps),
                    "controls": list(self.opts.selection.controls),
                },
                "environment": _headers_note(),
                "discovery": None,
            },
        )
        # Compile (in a child process) while discovery walks /proc: the two overlap on separate CPUs.
        loader = _BackgroundLoad(self.opts.probe_config)
        try:
            snap = self._snapshot()
        except BaseException:
            loader.discard()
            raise
        writer.manifest["discovery"] = to_jsonable(snap) if snap else None
        probes: Probes | None = None
        counters: BackendCounterRecorder | None = None
        try:
            try:
                probes = loader.result()
            except VhtuneError:
                if not self.stop.event.is_set():
                    raise
                # The stop came during the compile and took the compile child with it (a signal to the whole
                # process group or unit): still a clean stop, with no intervals.
                writer.close(self.stop.reason)
                self.summary.stop_reason = self.stop.reason
                return self.summary
            maps = ProbeMaps(probes)
            self._note(writer, maps.apply(build(snap, self.opts.selection)), maps)
            attached = time.monotonic() - t_start
            self._warn(writer, absent_taps(snap, self.opts.selection))  # after: not part of the time to attach
            self.summary.start_to_attached_s = attached
            self.summary.compile_s = probes.compile_s
            self.summary.probes = dict(probes.families)
            self.summary.variants = dict(probes.variants)
            writer.manifest["probes"] = {
                "families": probes.families,
                "variants": probes.variants,
                "compile_s": probes.compile_s,
                "start_to_attached_s": attached,
                "max_threads": probes.config.max_threads,
                "max_taps": probes.config.max_taps,
                "max_fds": probes.config.max_fds,
            }
            writer.flush()
            # vhtune back-ends' own per-queue counters (bursts, drops by cause) go next to the eBPF tables as
            # the optional backend_queues table, sampled from their control sockets at the same interval.
            controls = selected_controls(self.opts.selection.controls, snap, self.opts.selection.pids)
            if controls and self.opts.backend_counters:
                counters = BackendCounterRecorder(
                    self.opts.out, controls, interval=self.opts.interval, flush_every=self.opts.flush_every
                )
                counters.start()
            self._loop(writer, maps, probes)
        except RecordingError as exc:
            self.summary.error = str(exc)
            self.summary.stop_reason = "error"
            raise
        except VhtuneError as exc:  # probes failed to load etc.: say so in the manifest, then report
            self.summary.error = str(exc)
            self.summary.stop_reason = "error"
            with contextlib.suppress(RecordingError):
                writer.close(f"error: {exc.message}")
            raise
        finally:
            if counters is not None:
                counters.stop()
            if probes is None:
                loader.discard()
            else:
                self.summary.program_stats = probes.program_stats()
                probes.close()
            self.summary.elapsed_s = time.monotonic() - t_start
            self.summary.rows = dict(writer.rows_written)
            self._finish_summary(writer)
        return self.summary

    def _note(self, writer: RecordingWriter, ch: Any, maps: ProbeMaps | None = None) -> None:
        if ch:
            writer.note_change(time.time(), ch.added, ch.removed, ch.skipped)
            self.summary.changes += 1
        self._warn(writer, maps.tap_warnings if maps is not None else [])

    def _warn(self, writer: RecordingWriter, sentences: list[str]) -> None:
        """Each said once, in the manifest that readers and reports see (the live view shows them too)."""
        warnings = writer.manifest.setdefault("warnings", [])
        warnings.extend(w for w in dict.fromkeys(sentences) if w not in warnings)

    def _loop(self, writer: RecordingWriter, maps: ProbeMaps, probes: Probes) -> None:
        opts = self.opts
        t0 = last = time.monotonic()
        next_refresh = t0 + opts.refresh_s
        deadline = t0 + opts.duration if opts.duration else None
        index = 0
        boundary = 1  # the interval ends at t0 + boundary * interval
        maps.read()  # baseline: counts from before the first interval are not reported
        fdwatch = FdTableWatch(opts.selection.proc)
        fdwatch.grew(_watched_pids(maps.targets))
        while True:
            # After a stall (a slow flush or discovery) the next boundary is the first at least half an interval
            # after the last read: catching up on the missed ones would emit intervals a few ms long, whose
            # rates are noise. The interval that held the stall is longer, and measured.
            boundary = max(boundary, math.ceil((last - t0) / opts.interval + 0.5))
            target = t0 + boundary * opts.interval
            if deadline is not None:
                target = min(target, deadline)
            self._wait_watching_fds(target, fdwatch, maps, writer)
            want = None
            if time.monotonic() >= next_refresh and not self.stop.event.is_set():
                # Discover first (the slow part), then read and apply back to back: targets that come or go
                # change within milliseconds of an interval boundary, so their first and last intervals are
                # whole (the interval itself stretches by the discovery time, measured below).
                next_refresh = time.monotonic() + opts.refresh_s
                want = self._wanted()
            now = time.monotonic()
            d = maps.read()
            targets = maps.targets
            if want is not None:
                targets = TargetSet(dict(targets.threads), dict(targets.taps), dict(targets.fds))
                self._note(writer, maps.apply(want), maps)
            rows = to_rows(d, targets, pd.Timestamp.now(tz="UTC"), now - last)
            last = now
            index += 1
            boundary += 1
            for table, rs in rows.items():
                writer.add(table, rs)
            self._accumulate(rows)
            self.summary.intervals = index
            self.summary.lost_events += rows["lost"][0]["total"]
            if self.on_interval:
                warnings = list(writer.manifest.get("warnings") or [])
                view = IntervalView(index, now - t0, rows, rows["lost"][0]["total"], targets, warnings)
                self.on_interval(view)
            done = self.stop.event.is_set() or (deadline is not None and now >= deadline - 1e-3)
            if done:
                writer.manifest["program_stats"] = probes.program_stats()
            if self.stop.event.is_set():
                reason = self.stop.reason  # once: a SIGTERM after a SIGHUP may change it (see _Stop.set)
                writer.close(reason)
                self.summary.stop_reason = reason
                return
            if deadline is not None and now >= deadline - 1e-3:
                writer.close("duration")
                self.summary.stop_reason = "duration"
                return
            if index % opts.flush_every == 0:
                writer.flush()

    def _wanted(self) -> TargetSet | None:
        """What to watch now, from a fresh discovery; None when discovery failed and only it names targets
        (the previous targets stay)."""
        snap = self._snapshot()
        sel = self.opts.selection
        if snap is None and not (sel.pids or sel.controls):
            return None
        return build(snap, sel)

    def _wait_watching_fds(self, until: float, fdwatch: FdTableWatch, maps: ProbeMaps, writer: RecordingWriter) -> None:
        """Sleep until ``until`` (or a stop); meanwhile, when a watched process gains fds, re-discover and
        start watching what is new right away. Only additions are applied mid-interval: a target that went
        away keeps its partial interval and is let go at the next periodic refresh."""
        while not self.stop.event.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return
            self.stop.event.wait(min(left, CHECK_EVERY_S))
            if self.stop.event.is_set() or not fdwatch.grew(_watched_pids(maps.targets)):
                continue
            want = self._wanted()
            if want is None:
                continue
            cur = maps.targets
            merged = TargetSet({**want.threads, **cur.threads}, {**want.taps, **cur.taps}, {**want.fds, **cur.fds})
            self._note(writer, maps.apply(merged), maps)
            fdwatch.grew(_watched_pids(maps.targets))  # new processes (a front-end) get their baseline now

    def _accumulate(self, rows: Rows) -> None:
        for r in rows.get("threads", []):
            # A thread is (pid, tid): a tid may come back under another process. Its comm and role are the
            # latest rows' (a thread may rename itself), not the first ones seen.
            a = self._acc["threads"].setdefault(
                (r["pid"], r["tid"]),
                {
                    "pid": r["pid"],
                    "tid": r["tid"],
                    "comm": r["comm"],
                    "role": r["role"],
                    "oncpu_ns": 0,
                    "runq_ns": 0,
                    "runq_count": 0,
                    "time_s": 0.0,
                    "max_p99_ns": 0.0,
                },
            )
            a["comm"], a["role"] = r["comm"], r["role"]
            a["oncpu_ns"] += r["oncpu_ns"]
            a["runq_ns"] += r["runq_ns"]
            a["runq_count"] += r["runq_count"]
            a["time_s"] += r["interval_s"]
            if r["runq_p99_ns"] == r["runq_p99_ns"]:  # not NaN
                a["max_p99_ns"] = max(a["max_p99_ns"], r["runq_p99_ns"])
        for r in rows.get("taps", []):
            a = self._acc["taps"].setdefault(
                (r["netns"], r["ifname"]),
                {
                    "ifname": r["ifname"],
                    "netns": r["netns"],
                    "rx_packets": 0,
                    "tx_packets": 0,
                    "rx_bytes": 0,
                    "tx_bytes": 0,
                    "drops": 0,
                    "time_s": 0.0,
                },
            )
            for k in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "drops"):
                a[k] += r[k]
            a["time_s"] += r["interval_s"]
        for r in rows.get("queues", []):
            a = self._acc["queues"].setdefault(
                (r["pid"], r["fd"]),
                {
                    "pid": r["pid"],
                    "fd": r["fd"],
                    "role": r["role"],
                    "queue": r["queue"],
                    "writes": 0,
                    "reads": 0,
                    "injections": 0,
                },
            )
            for k in ("writes", "reads", "injections"):
                a[k] += r[k]

    def _finish_summary(self, writer: RecordingWriter) -> None:
        threads = []
        for a in self._acc["threads"].values():
            t = a.pop("time_s")
            a["oncpu_pct"] = 100.0 * a["oncpu_ns"] / (t * 1e9) if t > 0 else 0.0
            threads.append(a)
        self.summary.threads = sorted(threads, key=lambda a: -a["oncpu_pct"])
        taps = []
        for a in self._acc["taps"].values():
            t = a.pop("time_s")
            a["rx_pps"] = a["rx_packets"] / t if t > 0 else 0.0
            a["tx_pps"] = a["tx_packets"] / t if t > 0 else 0.0
            taps.append(a)
        self.summary.taps = taps
        self.summary.warnings = list(writer.manifest.get("warnings") or [])
        self.summary.queues = [q for q in self._acc["queues"].values() if q["writes"] or q["reads"]]
        if not self.summary.stop_reason:
            self.summary.stop_reason = writer.manifest.get("stop_reason") or "error"


def _watched_pids(targets: TargetSet) -> set[int]:
    return {t.pid for t in targets.threads.values()} | {pid for pid, _fd in targets.fds}
