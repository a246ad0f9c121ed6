"""``vhtune backend``: run the vhost-user reference back-end until SIGINT/SIGTERM, then print its stats."""

from __future__ import annotations

import logging

import click

from vhtune.backend.daemon import BackendConfig, Daemon
from vhtune.backend.ports import parse_port
from vhtune.backend.stats import RX_REFILL, Tunables, parse_cpus, parse_queue_cpus
from vhtune.cli import cli
from vhtune.cli.output import console, emit_json, table
from vhtune.errors import UsageError


@cli.command("backend")
@click.option("--socket", "sock", required=True, help="vhost-user unix socket path.")
@click.option("--port", "port", default="sink", show_default=True, help="sink | echo | gen[:SIZE] | tap:NAME[@NETNS]")
@click.option("--connect", is_flag=True, help="Client mode: connect to the front-end's socket (reconnects).")
@click.option("--queues", type=int, default=1, show_default=True, help="Queue pairs offered (GET_QUEUE_NUM).")
@click.option("--burst", type=int, default=32, show_default=True, help="Descriptors per burst (1..256).")
@click.option("--busy-poll-us", type=int, default=0, show_default=True, help="Poll this long before sleeping.")
@click.option("--event-idx/--no-event-idx", default=True, show_default=True, help="Offer VIRTIO_RING_F_EVENT_IDX.")
@click.option(
    "--notify-suppression/--no-notify-suppression",
    default=True,
    show_default=True,
    help="Suppress kicks while polling and honour the driver's interrupt suppression.",
)
@click.option("--call-coalesce", type=int, default=1, show_default=True, help="Bursts per call (1..1024).")
@click.option("--cpu", "cpus", default="", help="Worker CPU affinity, e.g. 1 or 0-1.")
@click.option("--queue-cpu", "queue_cpu", multiple=True, help="Per-queue affinity QUEUE=CPULIST (repeatable).")
@click.option("--rx-refill", type=click.Choice(RX_REFILL), default="wait", show_default=True)
@click.option("--control", "control", default=None, help="Control socket path (JSON lines, mode 0600).")
@click.option("--json", "as_json", is_flag=True, help="Print the exit stats as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Log protocol messages at info level.")
def backend_cmd(
    sock: str,
    port: str,
    connect: bool,
    queues: int,
    burst: int,
    busy_poll_us: int,
    event_idx: bool,
    notify_suppression: bool,
    call_coalesce: int,
    cpus: str,
    queue_cpu: tuple[str, ...],
    rx_refill: str,
    control: str | None,
    as_json: bool,
    verbose: bool,
) -> None:
    """Serve one vhost-user front-end at a time (DPDK virtio-user, QEMU) as a virtio-net device."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="vhtune backend: %(message)s")
    if not 1 <= queues <= 128:
        raise UsageError(f"--queues {queues} must be 1..128")
    tun = Tunables(queue_pairs=queues)
    tun.set(
        burst=burst,
        busy_poll_us=busy_poll_us,
        event_idx=event_idx,
        suppression=notify_suppression,
        call_coalesce=call_coalesce,
        cpus=parse_cpus(cpus),
        queue_cpus=parse_queue_cpus(queue_cpu),
        rx_refill=rx_refill,
    )
    cfg = BackendConfig(socket=sock, port=parse_port(port), client=connect, control=control, tunables=tun)
    report = Daemon(cfg).run()
    if as_json:
        emit_json({"queues": report})
        return
    rows = [
        (
            q["index"],
            q["dir"],
            q["packets"],
            q["bytes"],
            q["kicks"],
            q["calls"],
            q["bursts"],
            ", ".join(f"{k}={v}" for k, v in q["drops"].items()) or "-",
        )
        for q in report
    ]
    cols = ("queue", "dir", "packets", "bytes", "kicks", "calls", "bursts", "drops")
    console().print(table("vhtune backend: per-queue stats", cols, rows))
