"""The live view and the end summary render what the interval rows say (no probes needed)."""

from __future__ import annotations

import io
import math

import pytest
from rich.console import Console

from vhtune.cli.record_cmd import _ns, _print_summary, _view
from vhtune.probes.targets import TapTarget, TargetSet, ThreadTarget
from vhtune.record import IntervalView, Summary


def _render(obj: object) -> str:
    con = Console(width=160, record=True, file=io.StringIO())
    con.print(obj)
    return con.export_text()


def test_live_view_shows_top_threads_taps_and_lost_events() -> None:
    ts = TargetSet()
    ts.add_thread(ThreadTarget(11, 10, "vhtune-q1", "backend-worker"))
    ts.add_tap(TapTarget("vhltp1x0", vm="guest-a"))
    rows = {
        "threads": [
            {"comm": "idle", "tid": 12, "role": "vcpu", "oncpu_pct": 3.0, "runq_p99_ns": math.nan, "wakeups": 1},
            {
                "comm": "vhtune-q1",
                "tid": 11,
                "role": "backend-worker",
                "oncpu_pct": 97.5,
                "runq_p99_ns": 2.0**21,
                "wakeups": 40,
            },
        ],
        "taps": [{"ifname": "vhltp1x0", "netns": "root", "rx_pps": 123456.0, "tx_pps": 0.0, "drops": 7}],
        "queues": [{"pid": 10, "fd": 12, "role": "call", "queue": 1, "writes": 500, "reads": 0}],
    }
    text = _render(_view(IntervalView(3, 3.0, rows, 2, ts), None))
    lines = text.splitlines()
    q1 = next(i for i, ln in enumerate(lines) if "vhtune-q1" in ln)
    idle = next(i for i, ln in enumerate(lines) if "idle" in ln)
    assert q1 < idle and "97.5" in lines[q1] and "2.1 ms" in lines[q1]
    assert "123456" in text and "call" in text and "lost events 2" in text
    assert "guest-a" in next(ln for ln in lines if "vhltp1x0" in ln)


def test_live_view_names_the_netns_of_same_named_taps_and_says_when_they_merge() -> None:
    ts = TargetSet()
    ts.add_tap(TapTarget("tap0_kata", netns="kata-a", vm="vm-a"))
    ts.add_tap(TapTarget("tap0_kata", netns="kata-b", vm="vm-b"))
    row = {"ifname": "tap0_kata", "rx_pps": 0.0, "tx_pps": 0.0, "drops": 0}
    rows = {"taps": [{**row, "netns": "kata-a", "rx_pps": 5.0}, {**row, "netns": "kata-b"}]}
    warning = "taps named tap0_kata live in netns kata-a, kata-b: the tracepoint net variant matches by name only"
    lines = _render(_view(IntervalView(1, 1.0, rows, 0, ts, [warning]), None)).splitlines()
    assert "kata-a" in next(ln for ln in lines if "vm-a" in ln)
    assert "kata-b" in next(ln for ln in lines if "vm-b" in ln)
    assert any("by name only" in ln for ln in lines)


def test_summary_and_units(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Summary(
        out="/x",
        intervals=4,
        elapsed_s=4.2,
        stop_reason="SIGINT",
        start_to_attached_s=1.5,
        probes={"sched": "attached"},
        lost_events=0,
        threads=[{"comm": "CPU 0/KVM", "tid": 5, "role": "vcpu", "oncpu_pct": 12.25, "max_p99_ns": 0.0}],
    )
    con = Console(width=160, record=True, file=io.StringIO())
    monkeypatch.setattr("vhtune.cli.record_cmd.console", lambda: con)
    _print_summary(s)
    text = con.export_text()
    assert "recorded 4 intervals" in text and "stopped: SIGINT" in text and "CPU 0/KVM" in text and "12.2" in text
    assert _ns(1500.0) == "1.5 µs" and _ns(float("nan")) == "-" and _ns(3e9) == "3.0 s"
