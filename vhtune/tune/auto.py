"""The closed loop: record a baseline → analyze → apply the top runtime recommendation → record again →
compare the finding's own target metric → keep the change, or roll it back.

It runs against a live data path; `vhtune tune auto --scenario NAME` first starts a lab scenario (with its
faults) in the background to be that data path. A change is kept only when the metric the finding names
(`vhtune.api.measure`: run-queue share, burst size, drops/s, notifications per packet…) improved by at least
``min_gain`` and the path's packet rate did not fall by more than ``max_pps_loss``: a fix must not buy its
metric with throughput.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vhtune import api
from vhtune.detect.finding import Finding, Recommendation
from vhtune.discover import discover
from vhtune.discover.model import Snapshot
from vhtune.errors import TuneError, VhtuneError
from vhtune.record import Recorder, RecordOptions, Selection
from vhtune.tune.engine import Request, apply_plan, make_plan, rollback_plan
from vhtune.tune.knob import Target
from vhtune.tune.targets import KNOB_TARGET_KIND


@dataclass
class AutoOptions:
    out: Path
    window_s: float = 5.0  # length of each recording
    settle_s: float = 1.0  # after applying, before the next recording
    min_gain: float = 0.25
    max_pps_loss: float = 0.10
    max_tries: int = 2  # recommendations tried in rank order until one is kept
    only: tuple[str, ...] = ()  # consider only these finding ids
    backend_pids: tuple[int, ...] = ()  # consider only data paths served by these back-ends (empty: all)
    manual: Request | None = None  # apply this instead of the top recommendation …
    manual_metric: str | None = None  # … and judge it by this finding id's metric


@dataclass
class Attempt:
    finding: dict[str, Any]
    change: dict[str, Any]
    plan_id: str = ""
    metric: str | None = None
    before: float | None = None
    after: float | None = None
    gain: float | None = None
    pps_before: float | None = None
    pps_after: float | None = None
    decision: str = ""  # kept / rolled-back
    reason: str = ""
    recording: str = ""
    report: str = ""


@dataclass
class AutoResult:
    out: str
    baseline: str = ""
    baseline_report: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    decision: str = "nothing-to-do"  # kept / rolled-back / nothing-to-do
    reason: str = ""

    @property
    def kept(self) -> Attempt | None:
        return next((a for a in self.attempts if a.decision == "kept"), None)


def record_window(out: Path, seconds: float) -> Path:
    """One recording of every discovered data path (with vhtune back-ends' own counters)."""
    Recorder(RecordOptions(out=out, selection=Selection(all=True), interval=0.5, duration=seconds)).run()
    return out


def candidates(
    findings: list[Finding], only: tuple[str, ...], paths: set[str] | None = None
) -> list[tuple[Finding, Recommendation]]:
    """Every (finding, recommendation) vhtune can apply at runtime and roll back, best first."""
    out = []
    for f in findings:
        if f.severity == "info" or (only and f.id not in only) or (paths is not None and f.path not in paths):
            continue
        for r in f.recommendations:
            if r.tune is not None and r.knob != "qemu-option" and r.knob in KNOB_TARGET_KIND:
                out.append((f, r))
    return out


def _request(r: Recommendation) -> Request:
    assert r.tune is not None
    return Request(
        r.tune["knob"], Target(KNOB_TARGET_KIND[r.knob], dict(r.tune["target"])), r.tune["value"], reason=r.knob
    )


def _paths(rec: api.Recording, backend_pids: tuple[int, ...]) -> list[str]:
    """Data paths of ``rec`` served by ``backend_pids`` (all of them when empty)."""
    vms = rec.vms
    return [str(p) for p, b in zip(vms.index, vms["backend_pid"], strict=True) if not backend_pids or b in backend_pids]


def _manual_finding(rec: api.Recording, fid: str, backend_pids: tuple[int, ...]) -> Finding:
    """A stand-in finding for judging a manual change: the (first) data path it acts on."""
    path = next(iter(_paths(rec, backend_pids)), "")
    return Finding(fid, "manual change", path, "path", path, "info", 1.0, "", [])


def run_auto(
    opts: AutoOptions, snapshot_fn: Callable[[], Snapshot] = lambda: discover(guest_memory_numa=False)
) -> AutoResult:
    opts.out.mkdir(parents=True, exist_ok=True)
    res = AutoResult(out=str(opts.out))
    snap = snapshot_fn()
    if not snap.backends:
        raise TuneError("no back-end data path found to tune", "start the VM/back-end, or use --scenario")
    before_dir = record_window(opts.out / "before", opts.window_s)
    res.baseline = str(before_dir)
    rec_before = api.load(before_dir)
    findings = api.analyze(rec_before)
    res.baseline_report = str(api.write_report(rec_before, findings, opts.out / "before.html"))
    tries: list[tuple[Finding, Request]] = []
    if opts.manual is not None:
        fid = opts.manual_metric or "backend-thread-saturated"
        tries.append((_manual_finding(rec_before, fid, opts.backend_pids), opts.manual))
    else:
        paths = set(_paths(rec_before, opts.backend_pids)) if opts.backend_pids else None
        for f, r in candidates(findings, opts.only, paths):
            req = _request(r)
            if all(req != t[1] for t in tries):
                tries.append((f, req))
    for n, (finding, req) in enumerate(tries[: opts.max_tries]):
        att = _attempt(opts, n, finding, req, rec_before, snapshot_fn)
        res.attempts.append(att)
        if att.decision == "kept":
            break
    if res.kept:
        res.decision, res.reason = "kept", res.kept.reason
    elif res.attempts:
        res.decision, res.reason = "rolled-back", "; ".join(a.reason for a in res.attempts)
    else:
        res.reason = "no finding with a recommendation vhtune can apply at runtime"
    _write(opts, res)
    return res


def _attempt(
    opts: AutoOptions,
    n: int,
    finding: Finding,
    req: Request,
    rec_before: api.Recording,
    snapshot_fn: Callable[[], Snapshot],
) -> Attempt:
    att = Attempt(
        finding={"id": finding.id, "subject": finding.subject, "severity": finding.severity},
        change={"knob": req.knob, "target": req.target.label(), "value": req.value},
    )
    m_before = api.measure(rec_before, finding)
    plan = make_plan([req], snapshot_fn())
    att.plan_id = plan.id
    apply_plan(plan, snapshot_fn)
    try:
        time.sleep(opts.settle_s)
        after_dir = record_window(opts.out / f"after-{n + 1}", opts.window_s)
        rec_after = api.load(after_dir)
    except VhtuneError:
        rollback_plan(plan.id)
        raise
    att.recording = str(after_dir)
    att.report = str(api.write_report(rec_after, api.analyze(rec_after), opts.out / f"after-{n + 1}.html"))
    m_after = api.measure(rec_after, finding)
    att.metric, att.before, att.after = m_before.metric, m_before.value, m_after.value
    att.pps_before, att.pps_after = m_before.pps, m_after.pps
    att.gain = m_before.improvement(m_after)
    pps_loss = (m_before.pps - m_after.pps) / m_before.pps if m_before.pps and m_after.pps is not None else 0.0
    what = f"{req.knob} {req.target.label()} → {req.value}"
    if att.gain is None:
        att.decision, att.reason = "rolled-back", f"{what}: {m_before.metric} not measurable on both recordings"
    elif att.gain < opts.min_gain:
        att.decision = "rolled-back"
        att.reason = f"{what}: {m_before.metric} changed {att.gain:+.0%} (needs ≥ {opts.min_gain:+.0%})"
    elif pps_loss > opts.max_pps_loss:
        att.decision = "rolled-back"
        att.reason = f"{what}: packet rate fell {pps_loss:.0%} (more than {opts.max_pps_loss:.0%})"
    else:
        att.decision, att.reason = "kept", f"{what}: {m_before.metric} improved {att.gain:+.0%}"
    if att.decision == "rolled-back":
        rollback_plan(plan.id)
    return att


def _write(opts: AutoOptions, res: AutoResult) -> None:
    (opts.out / "auto.json").write_text(json.dumps(asdict(res), indent=2, default=str) + "\n")
    (opts.out / "auto.html").write_text(_summary_html(res))


def _summary_html(res: AutoResult) -> str:
    import html

    def cell(v: Any) -> str:
        return f"<td>{html.escape(str(v))}</td>"

    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "#",
            "finding",
            "change",
            "metric",
            "before",
            "after",
            "gain",
            "packets/s before → after",
            "decision",
            "report",
        )
    )
    rows = "".join(
        "<tr>"
        + cell(i + 1)
        + cell(f"{a.finding['id']} on {a.finding['subject']}")
        + cell(f"{a.change['knob']} {a.change['target']} → {a.change['value']}")
        + cell(a.metric)
        + cell(a.before)
        + cell(a.after)
        + cell("n/a" if a.gain is None else f"{a.gain:+.1%}")
        + cell(f"{a.pps_before} → {a.pps_after}")
        + cell(f"{a.decision}: {a.reason}")
        + f'<td><a href="{Path(a.report).name}">after</a></td></tr>'
        for i, a in enumerate(res.attempts)
    )
    return (
        "<!doctype html><meta charset=utf-8><title>vhtune tune auto</title>"
        f"<h1>vhtune tune auto: {html.escape(res.decision)}</h1><p>{html.escape(res.reason)}</p>"
        f'<p><a href="{Path(res.baseline_report).name}">baseline report</a></p>'
        f"<table border=1 cellpadding=4><tr>{head}</tr>{rows}</table>"
    )
