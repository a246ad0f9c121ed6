"""Lab scenarios: a back-end, a real front-end, traffic for a bounded time, faults, one JSON summary.

CPU placement on a 2-CPU host: the back-end's data path on CPU 1, the front-end (vCPU or DPDK forwarding lcore)
on CPU 0; the ``same-cpu`` fault puts both on CPU 1. The guest, DPDK and KVM scenarios live here, tap-rx in
scenario_taprx.py; options and shared helpers in scenario_base.py (re-exported: callers use this module).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from vhtune.errors import CapabilityError, LabError, UsageError
from vhtune.lab import dpdk
from vhtune.lab.backends import BackendOptions, LabBackend, make_backend
from vhtune.lab.faults import FaultContext, FaultSet, Placement
from vhtune.lab.guestinit import Workload
from vhtune.lab.image import ensure_image
from vhtune.lab.names import lab_name, run_dir
from vhtune.lab.netns import Netns
from vhtune.lab.proc import wait_for
from vhtune.lab.qemu import GuestConfig, QemuGuest
from vhtune.lab.record_hook import RecordHook
from vhtune.lab.scenario_base import (
    BOOT_ALLOWANCE_S,
    GUEST_CIDR,
    HOST_IP,
    RunOptions,
    Scenario,
    backend_pid,
    notifications,
    rate,
    strip,
    tap_backend,
)
from vhtune.lab.scenario_taprx import tap_rx

__all__ = ["SCENARIOS", "RunOptions", "Scenario", "run"]


# --- guest scenarios --------------------------------------------------------------------------------------
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
    rec.start([guest.pid, backend_pid(be)], opts.duration + BOOT_ALLOWANCE_S)
    opts.started.set()
    res = guest.wait(timeout=opts.duration + 90)
    be_stats = be.finish()
    summary_extra: dict[str, Any] = {"guest_ready_s": res.ready_s, "guest_wall_s": round(res.wall_s, 2)}
    if ns is not None and tap is not None:
        summary_extra["tap"] = ns.link_stats(tap)
    if (r := rec.stop()) is not None:
        summary_extra["recording"] = r
    return res.result, be_stats, summary_extra, guest


def guest_ping(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    ns, tap, be, place = tap_backend(opts, faults, stack)
    wl = Workload("ping", duration=int(opts.duration), ip=GUEST_CIDR, peer=HOST_IP, count=opts.count)
    res, bst, extra, _g = _run_guest(opts, faults, stack, wl, ns, tap, be, place)
    secs = float(res["t_end"]) - float(res["t_start"])
    sent, got = int(res.get("sent", 0)), int(res.get("received", 0))
    return {
        "throughput": {"rtt_per_s": rate(got, secs), "rtt_avg_ms": res.get("rtt_avg_ms")},
        "drops": {"ping_lost": sent - got, **bst["drops"], "tap_tx_dropped": extra["tap"]["tx_dropped"]},
        "guest": res,
        "notifications": notifications(bst),
        "backend_stats": strip(bst),
        **extra,
        "checks": {
            "replies": got > 0,
            "backend_saw_guest_tx": bst["from_guest_packets"] == int(res.get("eth0_tx_total", -1)),
        },
    }


def guest_pktgen(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    ns, tap, be, place = tap_backend(opts, faults, stack)
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
        "throughput": {"pps": rate(sent, secs), "mbps": round(rate(sent * opts.size * 8, secs) / 1e6, 2)},
        "drops": {"pktgen_errors": res.get("errors", 0), **bst["drops"], "tap_rx_dropped": extra["tap"]["rx_dropped"]},
        "guest": res,
        "notifications": notifications(bst),
        "backend_stats": strip(bst),
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
    ns, tap, be, place = tap_backend(opts, faults, stack)
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
        "backend_stats": strip(bst),
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
        "throughput": {"pps": rate(got, secs)},
        "drops": dict(bst["drops"]),
        "guest": res,
        "notifications": notifications(bst),
        "backend_stats": strip(bst),
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
    rec.start([fe.pid, backend_pid(be)], opts.duration)
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
    if fe_mode == "txonly":
        # testpmd's last bursts may still sit in the TX ring when it stops (256 descriptors: a back-end at burst 1
        # under load takes a while); the back-end counts them once it has drained the ring.
        sent_total = before["from_guest_packets"] + dpdk.total(fwd, "tx_packets")
        with contextlib.suppress(LabError):  # not drained within 5 s: the count check below says so
            wait_for(lambda: be.stats()["from_guest_packets"] >= sent_total, 5.0, "the back-end to drain the ring")
    after = be.finish()
    delta = after["from_guest_packets"] - before["from_guest_packets"]
    delta_to = after["to_guest_packets"] - before["to_guest_packets"]
    out: dict[str, Any] = {
        "frontend": {"mode": fe_mode, "forward": [f.__dict__ for f in fwd], "cpu": place.frontend_cpu},
        "notifications": notifications(after),
        "backend_stats": strip(after),
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
        out["throughput"] = {"pps": rate(delta, secs), "mbps": round(rate(delta * opts.size * 8, secs) / 1e6, 2)}
        out["drops"] = {"frontend_ring_full": dpdk.total(fwd, "tx_dropped"), **after["drops"]}
        out["checks"] = {"traffic": delta > 0, "backend_count_equals_frontend": delta == sent}
    elif fe_mode == "macswap":
        got = dpdk.total(fwd, "rx_packets")
        out["throughput"] = {"round_trips_per_s": rate(got, secs)}
        out["drops"] = {"frontend_tx_dropped": dpdk.total(fwd, "tx_dropped"), **after["drops"]}
        out["checks"] = {"traffic": got > 0, "echoed_all_it_received": abs(delta_to - delta) <= 4 * 32}
    else:
        got = dpdk.total(fwd, "rx_packets")
        out["throughput"] = {"pps": rate(got, secs), "mbps": round(rate(got * opts.size * 8, secs) / 1e6, 2)}
        out["drops"] = dict(after["drops"])
        out["checks"] = {"traffic": got > 0, "frontend_count_le_backend": got <= delta_to}
    return out


def dpdk_sink(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    return _dpdk(opts, faults, stack, "sink", "txonly")


def dpdk_gen(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    return _dpdk(opts, faults, stack, "gen", "rxonly")


def dpdk_echo(opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack) -> dict[str, Any]:
    return _dpdk(opts, faults, stack, "echo", "macswap")


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
    rec.start([os.getpid(), backend_pid(be)], opts.duration)
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
        "throughput": {"pps": rate(pkts, res.seconds), "irqs_per_s": rate(res.guest_irqs, res.seconds)},
        "drops": dict(after["drops"]),
        "frontend": res.__dict__,
        "kvm_tracepoints": trace.counts,
        "notifications": notifications(after),
        "backend_stats": strip(after),
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
