"""Lab scenarios: a back-end, a real front-end, traffic for a bounded time, faults, one JSON summary.

CPU placement on a 2-CPU host: the back-end's data path on CPU 1, the front-end (vCPU or DPDK forwarding lcore)
on CPU 0; the ``same-cpu`` fault puts both on CPU 1. Addresses exist only inside the scenario's own netns:
the netns side of the tap is ``HOST_CIDR``, the guest is ``GUEST_CIDR`` (the guest is not in any host netns).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhtune.errors import CapabilityError, LabError, UsageError
from vhtune.lab import dpdk
from vhtune.lab.backends import BACKENDS, BackendOptions, LabBackend, make_backend
from vhtune.lab.faults import FaultContext, FaultSet, Placement
from vhtune.lab.guestinit import Workload
from vhtune.lab.image import ensure_image
from vhtune.lab.names import lab_name, run_dir
from vhtune.lab.netns import Netns
from vhtune.lab.proc import LabProcess, wait_for
from vhtune.lab.qemu import GuestConfig, QemuGuest
from vhtune.lab.record_hook import RecordHook

HOST_IP = "10.91.0.1"
HOST_CIDR = f"{HOST_IP}/24"
GUEST_CIDR = "10.91.0.2/24"
BOOT_ALLOWANCE_S = 30.0


@dataclass
class RunOptions:
    duration: float = 5.0
    backend: str = "vhtune"
    faults: list[str] = field(default_factory=list)
    queues: int = 1
    size: int = 64
    count: int = 0
    rate: int = 0
    record: Path | None = None
    reverse: bool = False  # guest-iperf3: netns sends, guest receives
    # Set by a caller that drives the data path itself (`vhtune tune auto`) to end the traffic phase early.
    stop: threading.Event = field(default_factory=threading.Event)
    # Set by the scenario once its faults are applied and its traffic is started: what such a caller waits for
    # before it records (a front-end connecting comes earlier, before e.g. a tap's txqueuelen is shrunk).
    started: threading.Event = field(default_factory=threading.Event)

    def validate(self) -> None:
        if not 1 <= self.duration <= 300:
            raise UsageError(f"duration {self.duration:g} s is out of range", hint="use 1..300 seconds")
        if self.backend not in BACKENDS:
            raise UsageError(f"back-end {self.backend!r} is unknown", hint=f"one of {', '.join(BACKENDS)}")
        if not 1 <= self.queues <= 4:
            raise UsageError(f"queues={self.queues} is out of range", hint="use 1..4")
        if not 64 <= self.size <= 1500:
            raise UsageError(f"packet size {self.size} is out of range", hint="use 64..1500")
        if self.count < 0 or self.rate < 0:
            raise UsageError("count and rate must not be negative")


@dataclass
class Scenario:
    name: str
    description: str
    front_end: str
    run: Callable[[RunOptions, FaultSet, contextlib.ExitStack], dict[str, Any]]


def _rate(n: int | float, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def _strip(st: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in st.items() if k != "raw"}


def notifications(st: dict[str, Any]) -> dict[str, float | None]:
    """Kicks and calls per packet and packets per burst (None when the back-end does not count them)."""
    pkts = int(st["from_guest_packets"]) + int(st["to_guest_packets"])
    out: dict[str, float | None] = {}
    for key, name in (("kicks", "kicks_per_packet"), ("calls", "calls_per_packet")):
        out[name] = None if st.get(key) is None else round(int(st[key]) / max(pkts, 1), 5)
    out["packets_per_burst"] = None if not st.get("bursts") else round(pkts / int(st["bursts"]), 2)
    return out


# --- guest scenarios --------------------------------------------------------------------------------------
def _guest_setup(
    opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack
) -> tuple[Netns, str, LabBackend, Placement]:
    ns = stack.enter_context(Netns())
    tap = lab_name("tp")
    place = Placement()
    bopts = BackendOptions(port="tap", tap=tap, netns=ns, cpu=place.backend_cpu, queues=opts.queues)
    faults.plan(bopts, place, opts.backend)
    be = make_backend(opts.backend, bopts)
    stack.enter_context(be)
    wait_for(lambda: ns.has_link(tap), 10.0, f"the back-end's tap {tap}")
    ns.addr(tap, HOST_CIDR)
    return ns, tap, be, place


def _run_guest(
    opts: RunOptions,
    faults: FaultSet,
    stack: contextlib.ExitStack,
    wl: Workload,
    ns: Netns | None,
    tap: str | None,
    be: LabBackend,
    place: Placement,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], QemuGuest]:
    img = ensure_image()
    cfg = GuestConfig(img, be.socket, wl, queues=opts.queues, vcpu_cpu=place.frontend_cpu)
    guest = QemuGuest(cfg)
    stack.enter_context(guest)
    faults.start(FaultContext(opts.duration + BOOT_ALLOWANCE_S, ns, tap, place.backend_cpu))
    rec = RecordHook(opts.record)
    stack.callback(rec.stop)
    rec.start([guest.pid, _backend_pid(be)], opts.duration + BOOT_ALLOWANCE_S)
    opts.started.set()
    res = guest.wait(timeout=opts.duration + 90)
    be_stats = be.finish()
    summary_extra: dict[str, Any] = {"guest_ready_s": res.ready_s, "guest_wall_s": round(res.wall_s, 2)}
    if ns is not None and tap is not None:
        summary_extra["tap"] = ns.link_stats(tap)
    if (r := rec.stop()) is not None:
        summary_extra["recording"] = r
    return res.result, be_stats, summary_extra, guest


def _backend_pid(be: LabBackend) -> int:
    proc = getattr(be, "proc", None) or getattr(getattr(be, "pmd", None), "proc", None)
    return int(proc.pid) if proc is not None else 0


def guest_ping(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    ns, tap, be, place = _guest_setup(opts, faults, stack)
    wl = Workload("ping", duration=int(opts.duration), ip=GUEST_CIDR, peer=HOST_IP, count=opts.count)
    res, bst, extra, _g = _run_guest(opts, faults, stack, wl, ns, tap, be, place)
    secs = float(res["t_end"]) - float(res["t_start"])
    sent, got = int(res.get("sent", 0)), int(res.get("received", 0))
    return {
        "throughput": {"rtt_per_s": _rate(got, secs), "rtt_avg_ms": res.get("rtt_avg_ms")},
        "drops": {"ping_lost": sent - got, **bst["drops"], "tap_tx_dropped": extra["tap"]["tx_dropped"]},
        "guest": res,
        "notifications": notifications(bst),
        "backend_stats": _strip(bst),
        **extra,
        "checks": {
            "replies": got > 0,
            "backend_saw_guest_tx": bst["from_guest_packets"] == int(res.get("eth0_tx_total", -1)),
        },
    }


def guest_pktgen(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    ns, tap, be, place = _guest_setup(opts, faults, stack)
    mac = str(json.loads(ns.ip("-j", "link", "show", "dev", tap).stdout)[0]["address"])
    wl = Workload(
        "pktgen",
        duration=int(opts.duration),
        ip=GUEST_CIDR,
        peer=HOST_IP,
        count=opts.count,
        size=max(60, opts.size - 4),  # pktgen's pkt_size excludes the 4-byte FCS
        rate=opts.rate,
        dmac=mac,
    )
    res, bst, extra, _g = _run_guest(opts, faults, stack, wl, ns, tap, be, place)
    secs = float(res["t_end"]) - float(res["t_start"])
    sent = int(res.get("sent", 0))
    total_tx = int(res.get("eth0_tx_total", -1))
    return {
        "throughput": {"pps": _rate(sent, secs), "mbps": round(_rate(sent * opts.size * 8, secs) / 1e6, 2)},
        "drops": {"pktgen_errors": res.get("errors", 0), **bst["drops"], "tap_rx_dropped": extra["tap"]["rx_dropped"]},
        "guest": res,
        "notifications": notifications(bst),
        "backend_stats": _strip(bst),
        **extra,
        "checks": {
            "traffic": sent > 0,
            "count_reached": opts.count == 0 or sent == opts.count,
            "backend_count_equals_guest": bst["from_guest_packets"] == total_tx,
            # What the back-end took from the guest reached the tap, or is counted as dropped on the way
            # (back-end drop reasons, or the tap's rx_dropped when the netns backlog overflows under load).
            "tap_accounts_for_backend": extra["tap"]["rx_packets"]
            + extra["tap"]["rx_dropped"]
            + sum(int(v) for v in bst["drops"].values())
            >= bst["from_guest_packets"]
            >= extra["tap"]["rx_packets"],
        },
    }


def guest_iperf3(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    ns, tap, be, place = _guest_setup(opts, faults, stack)
    log = run_dir() / f"{lab_name('i')}-iperf3.json"
    stack.callback(lambda: log.unlink(missing_ok=True))
    server = ns.spawn(
        ["timeout", str(int(opts.duration + BOOT_ALLOWANCE_S + 30)), "iperf3", "-s", "-1", "-B", HOST_IP, "-J"],
        log=log,
        name="iperf3",
    )
    stack.callback(server.stop)
    wl = Workload("iperf3c", duration=int(opts.duration), ip=GUEST_CIDR, peer=HOST_IP, reverse=opts.reverse)
    res, bst, extra, _g = _run_guest(opts, faults, stack, wl, ns, tap, be, place)
    server.wait(10.0)
    srv_bps = None
    with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
        srv_end = json.loads(server.output())["end"]
        srv_bps = srv_end["sum_sent" if opts.reverse else "sum_received"]["bits_per_second"]
    kbps = float(res.get("kbps", 0))
    return {
        "throughput": {"mbps": round(kbps / 1000, 2), "server_mbps": round(srv_bps / 1e6, 2) if srv_bps else None},
        "drops": {**bst["drops"], "tap_tx_dropped": extra["tap"]["tx_dropped"]},
        "guest": res,
        "notifications": notifications(bst),
        "backend_stats": _strip(bst),
        **extra,
        "checks": {"iperf3_completed": res.get("rc") == 0 and kbps > 0, "server_saw_data": bool(srv_bps)},
    }


def guest_rx(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Back-end gen → an idle guest: a TCG guest reads far slower than any generator, so its RX ring runs dry
    (the rx-ring-starved situation) without any fault."""
    place = Placement()
    bopts = BackendOptions(port="gen", cpu=place.backend_cpu, queues=opts.queues, gen_size=opts.size)
    faults.plan(bopts, place, opts.backend)
    be = make_backend(opts.backend, bopts)
    stack.enter_context(be)
    wl = Workload("idle", duration=int(opts.duration), ip=GUEST_CIDR)
    res, bst, extra, _g = _run_guest(opts, faults, stack, wl, None, None, be, place)
    secs = float(res["t_end"]) - float(res["t_start"])
    got = int(res.get("eth0_rx", 0))
    return {
        "throughput": {"pps": _rate(got, secs)},
        "drops": dict(bst["drops"]),
        "guest": res,
        "notifications": notifications(bst),
        "backend_stats": _strip(bst),
        **extra,
        "checks": {"traffic": got > 0, "guest_got_at_most_what_was_sent": got <= bst["to_guest_packets"]},
    }


# --- DPDK front-end scenarios ----------------------------------------------------------------------------
def _dpdk(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack, port: str, fe_mode: str) -> dict[str, Any]:
    place = Placement()
    bopts = BackendOptions(port=port, cpu=place.backend_cpu, queues=opts.queues, gen_size=opts.size)
    faults.plan(bopts, place, opts.backend)
    be = make_backend(opts.backend, bopts)
    stack.enter_context(be)
    fe = dpdk.frontend(be.socket, mode=fe_mode, fwd_cpu=place.frontend_cpu, queues=opts.queues, txpkts=opts.size)
    stack.enter_context(fe)
    stopped: list[dpdk.ForwardStats] = []

    def stop_refilling() -> None:
        # A stopped rxonly lcore polls nothing: its RX ring is never refilled (the starving guest).
        stopped.extend(fe.stop())

    ctx = FaultContext(opts.duration, backend_cpu=place.backend_cpu)
    if fe_mode == "rxonly":
        ctx.stop_frontend_rx = stop_refilling
    time.sleep(0.3)  # let the rings start (SET_VRING_KICK / ENABLE) before counting
    before = be.stats()
    faults.start(ctx)
    rec = RecordHook(opts.record)
    stack.callback(rec.stop)
    rec.start([fe.pid, _backend_pid(be)], opts.duration)
    t0 = time.monotonic()
    # echo ↔ macswap is a closed loop: seed it with a few bursts, then every packet circulates.
    fe.start(tx_first=4 if fe_mode == "macswap" else 0)
    opts.started.set()
    opts.stop.wait(opts.duration / 2)
    faults.midpoint(ctx)
    mid = be.stats()
    opts.stop.wait(opts.duration / 2)
    late = be.stats()
    secs = time.monotonic() - t0
    fwd = fe.stop() if fe.started else stopped
    after = be.finish()
    delta = after["from_guest_packets"] - before["from_guest_packets"]
    delta_to = after["to_guest_packets"] - before["to_guest_packets"]
    out: dict[str, Any] = {
        "frontend": {"mode": fe_mode, "forward": [f.__dict__ for f in fwd], "cpu": place.frontend_cpu},
        "notifications": notifications(after),
        "backend_stats": _strip(after),
        "seconds": round(secs, 3),
        # Traffic in the run's second half (after any midpoint fault): rx-starve drives to_guest to ≈ 0.
        "second_half": {
            "from_guest_packets": late["from_guest_packets"] - mid["from_guest_packets"],
            "to_guest_packets": late["to_guest_packets"] - mid["to_guest_packets"],
        },
    }
    if (r := rec.stop()) is not None:
        out["recording"] = r
    if fe_mode == "txonly":
        sent = dpdk.total(fwd, "tx_packets")
        out["throughput"] = {"pps": _rate(delta, secs), "mbps": round(_rate(delta * opts.size * 8, secs) / 1e6, 2)}
        out["drops"] = {"frontend_ring_full": dpdk.total(fwd, "tx_dropped"), **after["drops"]}
        out["checks"] = {"traffic": delta > 0, "backend_count_equals_frontend": delta == sent}
    elif fe_mode == "macswap":
        got = dpdk.total(fwd, "rx_packets")
        out["throughput"] = {"round_trips_per_s": _rate(got, secs)}
        out["drops"] = {"frontend_tx_dropped": dpdk.total(fwd, "tx_dropped"), **after["drops"]}
        out["checks"] = {"traffic": got > 0, "echoed_all_it_received": abs(delta_to - delta) <= 4 * 32}
    else:
        got = dpdk.total(fwd, "rx_packets")
        out["throughput"] = {"pps": _rate(got, secs), "mbps": round(_rate(got * opts.size * 8, secs) / 1e6, 2)}
        out["drops"] = dict(after["drops"])
        out["checks"] = {"traffic": got > 0, "frontend_count_le_backend": got <= delta_to}
    return out


def dpdk_sink(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    return _dpdk(opts, faults, stack, "sink", "txonly")


def dpdk_gen(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    return _dpdk(opts, faults, stack, "gen", "rxonly")


def dpdk_echo(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    return _dpdk(opts, faults, stack, "echo", "macswap")


# --- tap → back-end → DPDK front-end ----------------------------------------------------------------------
# The sender addresses a static neighbour on the tap's subnet, so each datagram is routed out of the tap and
# nothing leaves the namespace. Its MAC is arbitrary: the back-end's tap port hands every frame it reads to
# the RX ring, and virtio-user rxonly counts whatever arrives (no MAC filter without a control queue).
TAP_RX_PEER = "10.91.0.2"
TAP_RX_PEER_MAC = "02:00:00:00:91:02"
# 200 frames back to back overflow a 4-slot tun ring long before a burst-1 reader has drained them (it reads
# ≈ 25 of them meanwhile), yet fit in the default 1000 with room for four more bursts; with 20 ms between bursts
# the average (≈ 9.5 kpps) is a fifth of what that reader drains here (≈ 47 kpps), so a reader sharing its CPU
# with other work still keeps up.
TAP_RX_BURST = 200
TAP_RX_PAUSE_MS = 20.0
TAP_RX_DRAIN_S = 0.5  # after the sender stops: the reader empties the tap and the front-end the ring


def _tap_rx_setup(
    opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack
) -> tuple[Netns, str, LabBackend, Placement]:
    ns = stack.enter_context(Netns())
    # No IPv6 in the netns: no router solicitations or DAD frames, so the tap carries only the sender's
    # datagrams and its counters compare exactly with the sender's and the back-end's.
    ns.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
    tap = lab_name("tp")
    place = Placement()
    bopts = BackendOptions(port="tap", tap=tap, netns=ns, cpu=place.backend_cpu, queues=opts.queues)
    faults.plan(bopts, place, opts.backend)
    be = make_backend(opts.backend, bopts)
    stack.enter_context(be)
    wait_for(lambda: ns.has_link(tap), 10.0, f"the back-end's tap {tap}")
    ns.addr(tap, HOST_CIDR)
    ns.ip("neigh", "replace", TAP_RX_PEER, "lladdr", TAP_RX_PEER_MAC, "dev", tap, "nud", "permanent")
    return ns, tap, be, place


def _tap_rx_sender(opts: RunOptions, ns: Netns, tap: str, cpu: int, stack: contextlib.ExitStack) -> LabProcess:
    """The bursty sender, pinned to the front-end's CPU: on the back-end's CPU it would make the reader wait
    for its CPU (back-end contention) instead of showing a queue that is too short."""
    pause_ms = 1000.0 * TAP_RX_BURST / opts.rate if opts.rate else TAP_RX_PAUSE_MS
    seconds = opts.duration + 10  # bounded even if the scenario never stops it
    limit = opts.count or int(TAP_RX_BURST * (seconds * 1000.0 / pause_ms + 1))
    log = run_dir() / f"{lab_name('u')}-udpburst.log"
    stack.callback(lambda: log.unlink(missing_ok=True))
    argv = ["taskset", "-c", str(cpu), sys.executable, "-m", "vhtune.lab.udpburst", tap, TAP_RX_PEER]
    argv += [str(opts.size), str(TAP_RX_BURST), f"{pause_ms:g}", f"{seconds:g}", str(limit)]
    sender = ns.spawn(argv, log=log, name="udpburst")
    stack.callback(sender.stop)
    return sender


def _sender_result(sender: LabProcess) -> dict[str, Any]:
    sender.stop(timeout=5.0)  # SIGTERM: it finishes its burst and prints its counts
    for line in reversed(sender.output().splitlines()):
        with contextlib.suppress(json.JSONDecodeError):
            return dict(json.loads(line))
    return {"sent": 0, "errors": 0, "bursts": 0, "output": sender.tail()}


def _txqueuelen(ns: Netns, tap: str) -> int:
    """The tap's txqueuelen: for tun also the size of the ptr_ring its frames wait in for the reader."""
    return int(json.loads(ns.ip("-j", "link", "show", "dev", tap).stdout)[0]["txqlen"])


def _delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: b[k] - a[k] for k in b}


def tap_rx(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Bursty UDP from the netns → tap → back-end (tap port) → DPDK virtio-user rxonly. Honours ``opts.stop``."""
    ns, tap, be, place = _tap_rx_setup(opts, faults, stack)
    fe = dpdk.frontend(be.socket, mode="rxonly", fwd_cpu=place.frontend_cpu, queues=opts.queues)
    stack.enter_context(fe)
    ctx = FaultContext(opts.duration, ns, tap, place.backend_cpu)
    time.sleep(0.3)  # let the rings start (SET_VRING_KICK / ENABLE) before counting
    fe.start()
    faults.start(ctx)
    rec = RecordHook(opts.record)
    stack.callback(rec.stop)
    rec.start([fe.pid, _backend_pid(be)], opts.duration)
    tap0, be0, qlen0 = ns.link_stats(tap), be.stats(), _txqueuelen(ns, tap)
    t0 = time.monotonic()
    sender = _tap_rx_sender(opts, ns, tap, place.frontend_cpu, stack)
    opts.started.set()
    opts.stop.wait(opts.duration / 2)
    faults.midpoint(ctx)
    opts.stop.wait(opts.duration / 2)
    secs = time.monotonic() - t0
    sent = _sender_result(sender)
    time.sleep(TAP_RX_DRAIN_S)
    tap1 = ns.link_stats(tap)
    fwd = fe.stop()
    after = be.finish()
    # txqueuelen at the end differs from the start when something (`vhtune tune auto`) changed it meanwhile.
    link = {"name": tap, "netns": ns.name, "txqueuelen": {"start": qlen0, "end": _txqueuelen(ns, tap)}}
    out: dict[str, Any] = {"sender": sent, "tap": tap1, "tap_link": link}
    if (r := rec.stop()) is not None:
        out["recording"] = r
    return {**_tap_rx_summary(opts, fwd, _delta(tap0, tap1), be0, after, secs, sent), **out}


def _tap_rx_summary(
    opts: RunOptions,
    fwd: list[dpdk.ForwardStats],
    tap: dict[str, int],
    be0: dict[str, Any],
    after: dict[str, Any],
    secs: float,
    sent: dict[str, Any],
) -> dict[str, Any]:
    got = dpdk.total(fwd, "rx_packets")
    to_guest = after["to_guest_packets"] - be0["to_guest_packets"]
    be_drops = {k: int(v) - int(be0["drops"].get(k, 0)) for k, v in after["drops"].items()}
    offered = tap["tx_packets"] + tap["tx_dropped"]
    return {
        "throughput": {
            "pps": _rate(got, secs),
            "mbps": round(_rate(got * opts.size * 8, secs) / 1e6, 2),
            "offered_pps": _rate(offered, secs),
        },
        "drops": {"tap_tx_dropped": tap["tx_dropped"], **be_drops},
        "frontend": {"mode": "rxonly", "forward": [f.__dict__ for f in fwd]},
        "tap_delta": tap,
        "notifications": notifications(after),
        "backend_stats": _strip(after),
        "seconds": round(secs, 3),
        "checks": {
            "traffic": got > 0,
            # Every datagram routed out of the tap was read from tun's ring (tx_packets) or dropped there.
            "tap_accounts_for_sender": offered == int(sent.get("sent", -1)),
            # What the back-end read from the tap reached the guest's RX ring or is one of its counted drops.
            "backend_delivered_what_it_read": to_guest + sum(be_drops.values()) == tap["tx_packets"],
            "frontend_got_what_backend_delivered": got == to_guest,
        },
    }


def kvm_irqfd(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    """N packets, each one guest doorbell (ioeventfd kick) and one back-end call (irqfd → KVM interrupt)."""
    from vhtune.lab.kvm_front import KvmIrqfdFrontend
    from vhtune.lab.kvmtrace import KvmTrace

    place = Placement()
    bopts = BackendOptions(port="sink", cpu=place.backend_cpu)
    faults.plan(bopts, place, opts.backend)
    be = make_backend(opts.backend, bopts)
    stack.enter_context(be)
    count = opts.count or 10_000
    fe = KvmIrqfdFrontend(be.socket, count, size=opts.size)
    faults.start(FaultContext(opts.duration, backend_cpu=place.backend_cpu))
    rec = RecordHook(opts.record)
    stack.callback(rec.stop)
    rec.start([os.getpid(), _backend_pid(be)], opts.duration)
    before = be.stats()
    opts.started.set()
    with KvmTrace(fe.lay.irq, fe.lay.doorbell_port, os.getpid(), max_seconds=opts.duration + 30) as trace:
        res = fe.run(timeout=opts.duration)
    time.sleep(0.1)  # the back-end's counters trail its last call by a moment
    after = be.finish()
    pkts = after["from_guest_packets"] - before["from_guest_packets"]
    kicks = None if after["kicks"] is None else after["kicks"] - before["kicks"]
    calls = None if after["calls"] is None else after["calls"] - before["calls"]
    out: dict[str, Any] = {
        "throughput": {"pps": _rate(pkts, res.seconds), "irqs_per_s": _rate(res.guest_irqs, res.seconds)},
        "drops": dict(after["drops"]),
        "frontend": res.__dict__,
        "kvm_tracepoints": trace.counts,
        "notifications": notifications(after),
        "backend_stats": _strip(after),
    }
    if (r := rec.stop()) is not None:
        out["recording"] = r
    irqs = res.guest_irqs - res.watchdog_irqs
    out["checks"] = {
        "completed": not res.timed_out and res.guest_kicks == count,
        "backend_packets_equal_kicks": pkts == res.guest_kicks,
        "guest_irqs_equal_packets": irqs == pkts,
        "backend_kicks_equal_guest": kicks is None or kicks == res.guest_kicks,
        "backend_calls_equal_guest_irqs": calls is None or calls == irqs,
        "kvm_set_irq_fired": trace.counts.get("set_irq", 0) >= irqs > 0,
        "kvm_pio_equal_kicks": trace.counts.get("pio", 0) == res.guest_kicks,
    }
    return out


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("guest-ping", "QEMU TCG guest pings the netns side of the back-end's tap", "qemu-guest", guest_ping),
        Scenario("guest-pktgen", "guest pktgen → back-end → tap; counts compared", "qemu-guest", guest_pktgen),
        Scenario("guest-iperf3", "guest iperf3 client → iperf3 server in the netns", "qemu-guest", guest_iperf3),
        Scenario("guest-rx", "back-end gen → idle guest (its RX ring runs dry)", "qemu-guest", guest_rx),
        Scenario("dpdk-sink", "DPDK virtio-user txonly → back-end sink", "dpdk", dpdk_sink),
        Scenario("dpdk-gen", "back-end gen → DPDK virtio-user rxonly", "dpdk", dpdk_gen),
        Scenario("dpdk-echo", "DPDK virtio-user macswap ↔ back-end echo, a closed loop", "dpdk", dpdk_echo),
        Scenario("tap-rx", "bursty UDP in the netns → tap → back-end → DPDK virtio-user rxonly", "dpdk", tap_rx),
        Scenario(
            "kvm-irqfd",
            "tiny KVM VM: guest doorbells are ioeventfd kicks, back-end calls are irqfd interrupts",
            "kvm-irqfd",
            kvm_irqfd,
        ),
    )
}


def run(name: str, opts: RunOptions) -> dict[str, Any]:
    """Run one scenario to completion; everything it started is gone when this returns or raises."""
    sc = SCENARIOS.get(name)
    if sc is None:
        raise UsageError(f"scenario {name!r} is unknown", hint=f"one of {', '.join(SCENARIOS)}")
    opts.validate()
    faults = FaultSet.parse(opts.faults)
    if os.geteuid() != 0:
        raise CapabilityError("the lab needs root (network namespaces, taps, /dev/kvm, BPF)", hint="run as root")
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        stack.callback(faults.stop)
        try:
            body = sc.run(opts, faults, stack)
        except KeyboardInterrupt:
            raise LabError(f"scenario {name} interrupted; everything it started was removed") from None
    return {
        "scenario": name,
        "backend": opts.backend,
        "front_end": sc.front_end,
        "duration_s": opts.duration,
        "faults": faults.names,
        "fault_notes": faults.notes,
        **body,
        "elapsed_s": round(time.monotonic() - t0, 2),
        "ok": all(body.get("checks", {}).values()),
    }
