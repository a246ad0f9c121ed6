"""``vhtune lab list|image|run|clean``: the lab's scenarios, guest image and leftovers."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from vhtune.cli import cli
from vhtune.cli.output import console, emit_json, table


@cli.group("lab")
def lab() -> None:
    """Real front-ends against a back-end in throwaway network namespaces, with fault injection."""


@lab.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def lab_list(as_json: bool) -> None:
    """The scenarios and the faults they accept."""
    from vhtune.lab.faults import FAULTS
    from vhtune.lab.scenarios import SCENARIOS

    if as_json:
        emit_json(
            {
                "scenarios": [
                    {"name": s.name, "front_end": s.front_end, "description": s.description} for s in SCENARIOS.values()
                ],
                "faults": FAULTS,
            }
        )
        return
    con = console()
    con.print(
        table(
            "scenarios",
            ("name", "front-end", "what"),
            [(s.name, s.front_end, s.description) for s in SCENARIOS.values()],
        )
    )
    con.print(table("faults (--fault, composable)", ("fault", "what"), list(FAULTS.items())))


@lab.command("image")
@click.option("--rebuild", is_flag=True, help="Build even when the cached image matches the package versions.")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Cache directory.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def lab_image(rebuild: bool, cache: Path | None, as_json: bool) -> None:
    """Build (or reuse) the guest kernel + initramfs from Debian packages."""
    from vhtune.lab.image import ensure_image

    img = ensure_image(cache, force=rebuild)
    info = {**img.manifest(), "built": img.built, "directory": str(img.directory)}
    if as_json:
        emit_json(info)
        return
    con = console()
    con.print(f"{'built' if img.built else 'cached'} guest image {img.key} in {img.directory}")
    con.print(table(None, ("package", "version"), sorted(img.packages.items())))


@lab.command("run")
@click.argument("name")
@click.option("--duration", type=float, default=5.0, show_default=True, help="Traffic seconds (1..300).")
@click.option("--backend", type=click.Choice(["vhtune", "dpdk"]), default="vhtune", show_default=True)
@click.option("--fault", "faults", multiple=True, help="Fault to inject (repeat or comma-separate).")
@click.option("--queues", type=int, default=1, show_default=True, help="Queue pairs.")
@click.option("--size", type=int, default=64, show_default=True, help="Packet size for generators.")
@click.option("--count", type=int, default=0, show_default=True, help="Packet/ping count (0: duration-bound).")
@click.option("--rate", type=int, default=0, show_default=True, help="Guest pktgen packets/s (0: flat out).")
@click.option("--reverse", is_flag=True, help="guest-iperf3: the netns sends, the guest receives.")
@click.option("--record", type=click.Path(path_type=Path), default=None, help="Run `vhtune record` into DIR.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def lab_run(
    name: str,
    duration: float,
    backend: str,
    faults: tuple[str, ...],
    queues: int,
    size: int,
    count: int,
    rate: int,
    reverse: bool,
    record: Path | None,
    as_json: bool,
) -> None:
    """Run scenario NAME and print its summary (throughput, drops, back-end stats)."""
    from vhtune.lab.scenarios import RunOptions, run

    def _term(_sig: int, _frame: object) -> None:
        # SIGTERM unwinds like Ctrl-C, so the scenario's teardown (processes, netns, sockets) still runs.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    opts = RunOptions(duration, backend, list(faults), queues, size, count, rate, record, reverse)
    summary = run(name, opts)
    if as_json:
        emit_json(summary)
    else:
        con = console()
        con.print(
            f"scenario {name} on {backend}: {'ok' if summary['ok'] else 'CHECKS FAILED'} in {summary['elapsed_s']} s"
        )
        rows = [("throughput", k, v) for k, v in summary.get("throughput", {}).items()]
        rows += [("drops", k, v) for k, v in summary.get("drops", {}).items()]
        rows += [("notify", k, v) for k, v in summary.get("notifications", {}).items() if v is not None]
        rows += [("kvm tracepoint", k, v) for k, v in summary.get("kvm_tracepoints", {}).items()]
        rows += [("check", k, v) for k, v in summary.get("checks", {}).items()]
        rows += [("fault", k, v) for k, v in summary.get("fault_notes", {}).items()]
        con.print(table(None, ("", "what", "value"), rows))
    if not summary["ok"]:
        raise click.exceptions.Exit(1)


@lab.command("clean")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def lab_clean(dry_run: bool, as_json: bool) -> None:
    """Remove leftovers of dead lab runs (found by the lab's name prefix; live runs are kept)."""
    from vhtune.lab.hygiene import clean

    rep = clean(dry_run=dry_run)
    if as_json:
        emit_json(rep)
        return
    verb = "would remove" if dry_run else "removed"
    con = console()
    n = len(rep.processes) + len(rep.netns) + len(rep.links) + len(rep.files)
    con.print(f"{verb} {n} leftover(s); kept {len(rep.kept_live)} belonging to live runs")
    for kind, items in (("process", rep.processes), ("netns", rep.netns), ("link", rep.links), ("file", rep.files)):
        for it in items:
            con.print(f"  {kind} {it}")
