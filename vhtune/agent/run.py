"""The agent loop: recording segments back to back, each folded into the exporter's state as it is read.

Each segment is one `vhtune record` run (probes attached, discovery refreshed every few seconds, crash-safe
Parquet); when it ends the next starts, so the rolling recording is a directory of complete recordings that
retention trims as whole units. SIGHUP ends the current segment early, re-reads the config file and starts the
next with it; SIGINT/SIGTERM end the segment cleanly (probes detached, manifest complete) and stop the agent.
A segment boundary re-attaches the probes (the compile runs in a child, ~1.5-2 s without data).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from vhtune import api
from vhtune.agent.config import AgentConfig, reload
from vhtune.agent.retention import enforce
from vhtune.errors import VhtuneError
from vhtune.exporter.server import parse_listen, serve
from vhtune.exporter.state import ExporterState, FindingGauge
from vhtune.probes.targets import TargetSet
from vhtune.record import IntervalView, Recorder, RecordOptions, Selection

log = logging.getLogger("vhtune.agent")


def segment_name(now: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))


def _pids(ts: TargetSet) -> set[int]:
    return {t.pid for t in ts.threads.values()} | {pid for pid, _ in ts.fds}


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        cfg.check()
        self.cfg = cfg
        self.state = ExporterState()
        self._targets: TargetSet | None = None
        self._recorder: Recorder | None = None
        self._segment: Path | None = None
        self._last_analysis = 0.0
        self._analysis: threading.Thread | None = None
        self.segments_done = 0
        self.stop_reason = ""
        self._pending: list[str] = []  # signals that came while no segment ran

    # --- per interval (the recorder's thread) --------------------------------------------------------------
    def _on_interval(self, iv: IntervalView) -> None:
        self.state.update(iv.rows, time.time())
        prev, self._targets = self._targets, iv.targets
        if prev is not None:
            gone_tids = set(prev.threads) - set(iv.targets.threads)
            gone_taps = set(prev.taps) - set(iv.targets.taps)
            gone_pids = _pids(prev) - _pids(iv.targets)
            if gone_tids or gone_taps or gone_pids:
                self.state.forget(pids=gone_pids, tids=gone_tids, taps=gone_taps)
        if self._recorder is not None and iv.index == 1:
            self.state.set_info(
                **{f"family_{k}": str(v) for k, v in self._recorder.summary.probes.items()},
                **{f"variant_{k}": str(v) for k, v in self._recorder.summary.variants.items()},
            )
        now = time.monotonic()
        if now - self._last_analysis >= self.cfg.analyze_every and not (self._analysis and self._analysis.is_alive()):
            self._last_analysis = now
            seg = self._segment
            if seg is not None:
                self._analysis = threading.Thread(target=self._analyze, args=(seg,), name="agent-analyze", daemon=True)
                self._analysis.start()

    def _analyze(self, seg: Path) -> None:
        """Detectors over what the current segment has flushed so far; active findings become gauges."""
        try:
            findings = api.analyze(api.load(seg))
        except VhtuneError as exc:  # nothing flushed yet, or a transient read of a chunk being renamed
            log.debug("analysis of %s skipped: %s", seg, exc)
            return
        active = [f for f in findings if f.severity != "info"]
        self.state.set_findings([FindingGauge(f.id, f.subject, f.severity) for f in active])

    # --- the loop (main thread: the recorder installs its signal handlers there) ----------------------------
    def run(self) -> None:
        host, port = parse_listen(self.cfg.listen, self.cfg.listen_public)
        server, _ = serve(self.state, host, port)
        log.info("serving metrics on http://%s:%d/metrics", host, port)
        scratch = None if self.cfg.record_dir else tempfile.TemporaryDirectory(prefix="vhtune-agent-")
        try:
            with self._signals():
                self._segments(scratch)
        finally:
            server.shutdown()
            if scratch is not None:
                scratch.cleanup()

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Between segments the recorder's handlers are not installed: a SIGHUP or SIGTERM then would take the
        default action (SIGHUP kills). Keep them for the loop, and hand them to the segment about to start."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: object) -> None:
            name = signal.Signals(signum).name
            self._pending.append(name)
            if self._recorder is not None:
                self._recorder.stop.set(name)

        saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            yield
        finally:
            for sig, old in saved.items():
                signal.signal(sig, old)

    def _segments(self, scratch: tempfile.TemporaryDirectory[str] | None) -> None:
        while True:
            between, self._pending = self._pending, []
            stop = next((r for r in between if r in ("SIGINT", "SIGTERM")), None)
            if stop is not None:
                self.stop_reason = stop
                return
            if between:
                self._reload()
            root = self.cfg.record_dir or Path(scratch.name)  # type: ignore[union-attr]
            root.mkdir(parents=True, exist_ok=True)
            self._segment = root / segment_name()
            opts = RecordOptions(
                out=self._segment,
                selection=Selection(all=True),
                interval=self.cfg.interval,
                duration=self.cfg.segment,
                refresh_s=self.cfg.refresh,
            )
            rec = self._recorder = Recorder(opts, on_interval=self._on_interval)
            for name in self._pending:  # came since the check above: this segment stops at once
                rec.stop.set(name)
            self._pending.clear()
            summary = rec.run()
            self.segments_done += 1
            enforce(root, self.cfg.retention(), current=None if scratch is None else self._segment)
            reason = rec.stop.reason or summary.stop_reason  # a SIGTERM during the segment's shutdown too
            if reason in ("SIGINT", "SIGTERM"):
                self.stop_reason = reason
                return
            if reason == "SIGHUP":
                self._reload()

    def _reload(self) -> None:
        try:
            self.cfg = reload(self.cfg)
            log.info("configuration reloaded")
        except VhtuneError as exc:  # a bad file keeps the running configuration
            log.error("configuration not reloaded: %s", exc)
        with contextlib.suppress(VhtuneError):
            self.cfg.check()
