"""`vhtune record`: attach the probes, write a recording directory, show a live view, summarize at the end."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from vhtune.cli import cli
from vhtune.cli.output import console, emit_json, table
from vhtune.probes import ProbeConfig
from vhtune.record import IntervalView, Recorder, RecordOptions, Selection, Summary


def _view(iv: IntervalView, progress: Progress | None) -> Group:
    threads = sorted(iv.rows.get("threads", []), key=lambda r: -r["oncpu_pct"])[:10]
    t_rows = [
        (escape(r["comm"]), r["tid"], r["role"], f"{r['oncpu_pct']:.1f}", _ns(r["runq_p99_ns"]), r["wakeups"])
        for r in threads
    ]
    parts: list[object] = [
        table("threads (top on-CPU)", ["thread", "tid", "role", "cpu %", "runq p99", "wakeups"], t_rows)
    ]
    taps = iv.rows.get("taps", [])
    if taps:

        def vm(r: dict[str, Any]) -> str:
            t = iv.targets.taps.get((r.get("netns", "?"), r["ifname"]))
            return escape(t.vm) if t is not None and t.vm else "-"

        tap_rows = [
            (
                r["ifname"],
                escape(str(r.get("netns", "?"))),
                vm(r),
                f"{r['rx_pps']:.0f}",
                f"{r['tx_pps']:.0f}",
                r["drops"],
            )
            for r in taps
        ]
        parts.append(table("taps (rx = from the VM)", ["tap", "netns", "VM", "rx pps", "tx pps", "drops"], tap_rows))
        parts.extend(f"[yellow]{escape(w)}[/yellow]" for w in iv.warnings)
    queues = [r for r in iv.rows.get("queues", []) if r["writes"] or r["reads"]]
    if queues:
        q_rows = [(r["pid"], r["fd"], r["role"], r["queue"], r["writes"], r["reads"]) for r in queues[:10]]
        parts.append(table("eventfds", ["pid", "fd", "role", "queue", "writes", "reads"], q_rows))
    parts.append(
        f"interval {iv.index} · {len(iv.targets.threads)} threads, {len(iv.targets.taps)} taps, "
        f"{len(iv.targets.fds)} eventfds watched · lost events {iv.lost_total}"
    )
    if progress is not None:
        parts.append(progress)
    return Group(*parts)  # type: ignore[arg-type]


def _ns(v: float) -> str:
    if v != v:  # NaN
        return "-"
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if v >= div:
            return f"{v / div:.1f} {unit}"
    return f"{v:.0f} ns"


def _print_summary(s: Summary) -> None:
    con = console()
    con.print(
        f"recorded {s.intervals} intervals in {s.elapsed_s:.1f} s to {s.out} (stopped: {s.stop_reason}); "
        f"attached in {s.start_to_attached_s:.2f} s; lost events {s.lost_events}"
    )
    con.print("probes: " + ", ".join(f"{k} {v}" for k, v in s.probes.items()))
    if not (s.threads or s.taps or s.queues):
        con.print("nothing was watched: no VM or back-end was found; name targets with -p PID, --tap or --control")
    rows = [
        (escape(t["comm"]), t["tid"], t["role"], f"{t['oncpu_pct']:.1f}", _ns(t["max_p99_ns"] or float("nan")))
        for t in s.threads[:15]
    ]
    if rows:
        con.print(table("threads", ["thread", "tid", "role", "cpu % (avg)", "runq p99 (max)"], rows))
    for w in s.warnings:
        con.print(f"[yellow]warning: {escape(w)}[/yellow]")
    if s.taps:
        tap_rows = [
            (
                t["ifname"],
                escape(str(t.get("netns", "?"))),
                f"{t['rx_pps']:.0f}",
                f"{t['tx_pps']:.0f}",
                t["rx_packets"],
                t["tx_packets"],
                t["drops"],
            )
            for t in s.taps
        ]
        con.print(table("taps", ["tap", "netns", "rx pps", "tx pps", "rx pkts", "tx pkts", "drops"], tap_rows))


@cli.command("record")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="recording directory")
@click.option("-p", "--pid", "pids", multiple=True, type=click.IntRange(min=1), help="watch this process (repeat)")
@click.option("--all", "all_", is_flag=True, help="every thread of discovered VMs and back-ends")
@click.option(
    "--tap",
    "taps",
    multiple=True,
    help="also watch this tap (repeat): NAME takes every tap of that name, in whichever network namespaces it "
    "lives (one VM per netns gives several); NETNS/NAME only the one in that netns (root, a /run/netns name "
    "or net:[inode])",
)
@click.option("--control", "controls", multiple=True, help="a vhtune back-end's control socket (repeat)")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="stop after S seconds")
@click.option("--interval", default=1.0, show_default=True, type=float, help="seconds per interval")
@click.option("--flush-every", default=5, show_default=True, type=click.IntRange(min=1), help="intervals per chunk")
@click.option(
    "--refresh", default=5.0, show_default=True, type=click.FloatRange(min=0.1), help="re-discovery period (s)"
)
@click.option("--json", "as_json", is_flag=True, help="no live view; print the summary as JSON")
def record_cmd(
    out: Path,
    pids: tuple[int, ...],
    all_: bool,
    taps: tuple[str, ...],
    controls: tuple[str, ...],
    duration: float | None,
    interval: float,
    flush_every: int,
    refresh: float,
    as_json: bool,
) -> None:
    """Record threads, taps, eventfd kicks/calls and KVM injections with eBPF into DIR (Ctrl-C stops)."""
    opts = RecordOptions(
        out=out,
        selection=Selection(pids=pids, all=all_, taps=taps, controls=controls),
        interval=interval,
        duration=duration,
        flush_every=flush_every,
        refresh_s=refresh,
        probe_config=ProbeConfig(),
    )
    live_ok = not as_json and sys.stdout.isatty()
    progress: Progress | None = None
    task = None
    if live_ok and duration:
        progress = Progress(TextColumn("recording"), BarColumn(), TimeRemainingColumn())
        task = progress.add_task("rec", total=duration)
    live = Live(console=console(), refresh_per_second=4, transient=True) if live_ok else None

    def on_interval(iv: IntervalView) -> None:
        if progress is not None and task is not None:
            progress.update(task, completed=min(iv.elapsed_s, duration or 0))
        if live is not None:
            live.update(_view(iv, progress))

    recorder = Recorder(opts, on_interval=on_interval)
    if live is not None:
        with live:
            summary = recorder.run()
    else:
        summary = recorder.run()
    if as_json:
        emit_json(summary)
    else:
        _print_summary(summary)
