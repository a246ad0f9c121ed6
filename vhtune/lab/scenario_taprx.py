"""The ``tap-rx`` scenario: bursty UDP from the netns → tap → back-end (tap port) → DPDK virtio-user rxonly.

The one scenario where the host's side of a tap is the bottleneck by construction: with the
``tiny-txqueuelen`` fault, tun's ring (sized by txqueuelen) overflows at every burst and tun_net_xmit frees
the frames (tx_dropped); `vhtune tune auto` keeps this scenario's traffic running (``opts.stop``) while it
records, changes txqueuelen, and records again.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

from vhtune.lab import dpdk
from vhtune.lab.backends import LabBackend
from vhtune.lab.faults import FaultContext, FaultSet, Placement
from vhtune.lab.names import lab_name, run_dir
from vhtune.lab.netns import Netns
from vhtune.lab.proc import LabProcess
from vhtune.lab.record_hook import RecordHook
from vhtune.lab.scenario_base import RunOptions, backend_pid, notifications, rate, strip, tap_backend

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
    ns, tap, be, place = tap_backend(opts, faults, stack, quiet_ipv6=True)
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
    rec.start([fe.pid, backend_pid(be)], opts.duration)
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
            "pps": rate(got, secs),
            "mbps": round(rate(got * opts.size * 8, secs) / 1e6, 2),
            "offered_pps": rate(offered, secs),
        },
        "drops": {"tap_tx_dropped": tap["tx_dropped"], **be_drops},
        "frontend": {"mode": "rxonly", "forward": [f.__dict__ for f in fwd]},
        "tap_delta": tap,
        "notifications": notifications(after),
        "backend_stats": strip(after),
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
