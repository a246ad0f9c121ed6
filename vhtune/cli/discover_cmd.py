"""`vhtune discover`: the VMs on this host, their vCPU threads, netdevs, taps and the back-end on each socket."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from vhtune.cli import cli
from vhtune.cli.output import console, emit_json, table
from vhtune.cpulist import format_cpulist
from vhtune.discover import discover as take_snapshot
from vhtune.discover.model import ROLE_FRONTEND, BackendInfo, Snapshot, TapInfo, ThreadInfo, VMInfo
from vhtune.tune.knobs import describe_value


def _cpus(cpus: tuple[int, ...]) -> str:
    return format_cpulist(cpus) or "-"


def _thread_rows(threads: list[ThreadInfo]) -> list[tuple[object, ...]]:
    return [
        (
            escape(t.comm),
            t.tid,
            t.role,
            _cpus(t.affinity),
            _sched(t),
            "-" if t.last_cpu is None else t.last_cpu,
            "-" if t.numa_node is None else t.numa_node,
        )
        for t in threads
    ]


_THREAD_COLS = ["thread", "tid", "role", "affinity", "sched", "last cpu", "node"]


def _sched(t: ThreadInfo) -> str:
    """As the thread-sched knob and chrt show it: SCHED_FIFO 10, SCHED_OTHER nice 0."""
    if t.policy is None:
        return "-"
    return describe_value("thread-sched", {"policy": t.policy, "priority": t.rt_priority or 0, "nice": t.nice or 0})


def _tap_detail(tap: TapInfo | None) -> str:
    if tap is None:
        return "tap not found"
    bits = [f"netns {tap.netns}", f"{tap.queues} queue(s)"]
    if tap.txqueuelen is not None:
        bits.append(f"txqlen {tap.txqueuelen}")
    if tap.vnet_hdr is not None:
        bits.append("vnet_hdr" if tap.vnet_hdr else "no vnet_hdr")
    if tap.multi_queue:
        bits.append("multi_queue")
    if tap.stats:
        s = tap.stats
        bits.append(
            f"rx {s.get('rx_packets', 0)} pkts/{s.get('rx_dropped', 0)} drop, "
            f"tx {s.get('tx_packets', 0)} pkts/{s.get('tx_dropped', 0)} drop"
        )
    return ", ".join(bits)


def _vm_section(snap: Snapshot, vm: VMInfo) -> list[object]:
    by_tid = {t.tid: t for t in snap.threads}
    taps = {t.name: t for t in snap.taps if vm.pid in t.owner_pids}
    backends = {b.pid: b for b in snap.backends}
    head = [f"pid {vm.pid}"]
    if vm.uuid:
        head.append(f"uuid {vm.uuid}")
    if vm.memory_mib is not None:
        head.append(f"{vm.memory_mib} MiB")
    if vm.accel:
        head.append(vm.accel)
    if vm.netns:
        head.append(f"netns {vm.netns}")
    if vm.memory_nodes:
        head.append(f"memory on node {_cpus(tuple(vm.memory_nodes))}")
    title = f"[bold]VM {escape(vm.name or '?')}[/] — {escape(', '.join(head))}"
    threads = [by_tid[t] for t in vm.vcpu_tids + vm.vhost_tids if t in by_tid]
    parts: list[object] = [title]
    if threads:
        parts.append(table(None, _THREAD_COLS, _thread_rows(threads)))
    rows = []
    for nd in vm.netdevs:
        if nd.kind == "tap":
            where = nd.ifname or "?"
            detail = _tap_detail(taps.get(nd.ifname or ""))
            if nd.vhost:
                detail += ", vhost-net"
        elif nd.kind == "vhost-user":
            where = nd.socket_path or "?"
            sock = next((s for s in snap.sockets if s.vm_pid == vm.pid and s.netdev_id == nd.id), None)
            if sock is None:
                detail = "socket not found"
            else:
                side = "QEMU listens" if sock.listener_pid == vm.pid else "back-end listens"
                state = "connected" if sock.connected else "not connected"
                be = backends.get(sock.backend_pid) if sock.backend_pid is not None else None
                who = f"back-end pid {be.pid} {be.comm} ({be.kind})" if be else "no back-end found"
                detail = f"{state}, {side}, {who}"
        else:
            where, detail = "", ""
        rows.append((escape(nd.id), nd.kind, escape(where), nd.queues, escape(detail)))
    if rows:
        parts.append(table(None, ["netdev", "kind", "tap / socket", "queues", "details"], rows))
    return parts


def _backend_section(snap: Snapshot, be: BackendInfo) -> list[object]:
    by_tid = {t.tid: t for t in snap.threads}
    socks = ", ".join(be.socket_paths) or "-"
    fronts = ", ".join(map(str, be.frontend_pids)) or "-"
    if be.kind == "vhost-net":
        title = f"[bold]Back-end vhost-net[/] — kernel workers of VM pid {be.pid}"
    else:
        title = (
            f"[bold]Back-end {escape(be.comm)}[/] — pid {be.pid}, {be.kind}, "
            f"socket(s) {escape(socks)}, front-end pid(s) {fronts}"
        )
    threads = [by_tid[t] for t in be.thread_tids if t in by_tid]
    parts: list[object] = [title, table(None, _THREAD_COLS, _thread_rows(threads))] if threads else [title]
    # Non-VM front-ends (DPDK virtio-user): their data-path threads, where they spin matters as much.
    lcores = [t for t in snap.threads if t.pid in be.frontend_pids and t.role == ROLE_FRONTEND]
    if lcores:
        pids = ", ".join(map(str, sorted({t.pid for t in lcores})))
        parts += [f"Front-end threads (pid {pids})", table(None, _THREAD_COLS, _thread_rows(lcores))]
    return parts


def render(snap: Snapshot) -> None:
    out = console()
    nodes: dict[int, list[int]] = {}
    for c in snap.cpus:
        nodes.setdefault(c.node, []).append(c.cpu)
    topo = "; ".join(f"node {n}: CPUs {_cpus(tuple(cs))}" for n, cs in sorted(nodes.items()))
    out.print(f"[bold]{escape(snap.hostname)}[/] — kernel {escape(snap.kernel)}, {topo}")
    if not snap.vms:
        out.print("\nNo QEMU VMs found.")
    for vm in snap.vms:
        out.print()
        for part in _vm_section(snap, vm):
            out.print(part)
    for be in snap.backends:
        out.print()
        for part in _backend_section(snap, be):
            out.print(part)
    owned = {t.name for vm in snap.vms for t in snap.taps if vm.pid in t.owner_pids}
    others = [t for t in snap.taps if t.name not in owned]
    if others:
        out.print()
        rows = [(escape(t.name), ", ".join(map(str, t.owner_pids)), escape(_tap_detail(t))) for t in others]
        out.print(table("Other taps", ["tap", "held by pid", "details"], rows))
    if snap.problems:
        out.print("\n[yellow]Not visible:[/]")
        for p in snap.problems:
            out.print(f"  - {escape(p)}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the full snapshot as JSON.")
@click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Read proc/ and sys/ under this directory (a captured or fixture tree).",
)
@click.option("--no-numa-maps", is_flag=True, help="Skip /proc/PID/numa_maps (guest memory placement).")
def discover(as_json: bool, root: Path, no_numa_maps: bool) -> None:
    """Find QEMU VMs, their vCPU and vhost threads, taps, vhost-user sockets and the back-end on each."""
    snap = take_snapshot(root, guest_memory_numa=not no_numa_maps)
    if as_json:
        emit_json(snap)
    else:
        render(snap)
