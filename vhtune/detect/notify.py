"""Detectors on a data path's notifications and batching: kick storms (guest → host), interrupt storms
(host → guest), small batches, vCPU halt/wake cycles. Inputs: path_metrics (queues table for kick/call
eventfd writes and reads, irqs and injections, taps or back-end counters for packets, vcpu_wakeups)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from vhtune.analysis.topology import Path
from vhtune.detect import recommend as R
from vhtune.detect.evaluate import context, crossing, found, rate
from vhtune.detect.finding import Evidence, Finding, Recommendation

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.table import Detector


def _paths(rec: Recording) -> list[tuple[Path, pd.DataFrame]]:
    pm = rec.path_metrics
    out = []
    for name, g in pm.groupby(level="path", sort=True):
        path = rec.topology.by_name(str(name))
        if path is not None:
            out.append((path, g.droplevel("path")))
    return out


def _finding(rec: Recording, det: Detector, path: Path, ev: Evidence, quality: float = 1.0) -> Finding:
    details = {"backend_pid": path.backend_pid, "backend_kind": path.backend_kind, "taps": path.taps}
    return found(rec, det, ev, subject=path.name, subject_kind="path", path=path.name, details=details, quality=quality)


def _busy(g: pd.DataFrame, det: Detector) -> pd.DataFrame:
    """Intervals with enough traffic for per-packet ratios to mean something."""
    return g[g["pps"] >= det.threshold("pps").value]


def _per_pkt_or_burst(g: pd.DataFrame, det: Detector, what: str) -> tuple[Evidence | None, float]:
    """Notifications per packet; else, with back-end counters, one per back-end batch at a sustained rate."""
    per_pkt = g[f"{what}_per_pkt"]
    if what == "calls":
        per_pkt = g[["calls_per_pkt", "irqs_per_pkt"]].max(axis=1, skipna=True)
    ev = crossing(per_pkt[_busy(g, det).index], det.threshold(f"{what}_per_pkt"), len(g))
    if ev is not None:
        return ev, 1.0
    rate = g[what] / g["interval_s"]
    per_burst = g[f"{what}_per_burst"][rate >= det.threshold(f"{what}_per_s").value]
    ev = crossing(per_burst, det.threshold(f"{what}_per_burst"), len(g), "one per back-end batch: not suppressed")
    return ev, 0.8


def _notify_fix(path: Path, fallback: list[Recommendation]) -> list[Recommendation]:
    """When the recording says suppression or EVENT_IDX is off, turning it on is the first thing to do."""
    off = [k for k in ("event_idx", "suppression") if path.tunables.get(k) is False]
    fixes = [
        R.backend_tunable(
            path,
            k,
            False,
            True,
            "EVENT_IDX / used-flags suppression (virtio 1.2 §2.7.7, §2.7.10): notifications only when the other side "
            "asked for one, ≪ 1 per packet under load",
            "none known; it is the virtio default (EVENT_IDX is renegotiated when the device restarts)",
        )
        for k in off
    ]
    rest = [
        r for r in fallback if not (r.knob == "backend-tunable" and r.target.endswith(tuple(f"key={k}" for k in off)))
    ]
    return fixes + rest


def kick_storm(rec: Recording, det: Detector) -> list[Finding]:
    out = []
    for path, g in _paths(rec):
        ev, quality = _per_pkt_or_burst(g, det, "kicks")
        if ev is None:
            continue
        f = _finding(rec, det, path, ev, quality)
        f.evidence.append(context("kicks", rate(g, "kicks"), "/s"))
        f.evidence.append(context("packets", rate(g, "packets"), "pps"))
        f.recommendations = R.ranked(
            _notify_fix(
                path,
                [
                    R.backend_tunable(
                        path,
                        "event_idx",
                        False,
                        True,
                        "with VIRTIO_RING_F_EVENT_IDX the guest kicks only when the back-end asked to be woken: "
                        "≪ 1 kick per packet under load",
                        "none known; it is the virtio default (the guest must renegotiate: restart the device)",
                    ),
                    R.backend_tunable(
                        path,
                        "suppression",
                        False,
                        True,
                        "the back-end sets VRING_USED_F_NO_NOTIFY while it is processing, so the guest does not kick",
                        "none known",
                    ),
                    R.backend_tunable(
                        path,
                        "busy_poll_us",
                        None,
                        50,
                        "a polling back-end keeps notifications disabled longer",
                        "burns CPU while polling",
                    ),
                ],
            )
        )
        out.append(f)
    return out


def interrupt_storm(rec: Recording, det: Detector) -> list[Finding]:
    out = []
    for path, g in _paths(rec):
        ev, quality = _per_pkt_or_burst(g, det, "calls")
        if ev is None:
            continue
        f = _finding(rec, det, path, ev, quality)
        f.evidence.append(context("calls", rate(g, "calls"), "/s", "irqfd writes by the back-end"))
        f.evidence.append(
            context("KVM injections", float(g[["irqs", "injections"]].max(axis=1).sum() / g["interval_s"].sum()), "/s")
        )
        f.recommendations = R.ranked(
            _notify_fix(
                path,
                [
                    R.backend_tunable(
                        path,
                        "call_coalesce",
                        1,
                        8,
                        "the back-end signals the guest once per 8 bursts (always before it sleeps)",
                        "up to 8 bursts of extra RX latency",
                    ),
                    R.backend_tunable(
                        path,
                        "event_idx",
                        False,
                        True,
                        "with EVENT_IDX the back-end interrupts only when the guest's used_event says it wants one",
                        "none known (the guest renegotiates)",
                    ),
                    R.guest_command(
                        f"guest of {path.name}",
                        "ethtool -C eth0 rx-usecs 64 tx-usecs 64   # in the guest (virtio-net coalescing, Linux ≥ 6.2)",
                        "the guest's NAPI keeps interrupts off longer and takes bigger batches",
                        "adds up to 64 µs latency per packet at low rates",
                        "ethtool -C eth0 rx-usecs 0 tx-usecs 0",
                    ),
                ],
            )
        )
        out.append(f)
    return out


def small_batches(rec: Recording, det: Detector) -> list[Finding]:
    out = []
    for path, g in _paths(rec):
        counted = bool(g["bursts"].sum() > 0)
        if not counted:
            # No back-end counters: a back-end signals at most once per batch, so packets per
            # max(wake-ups, calls) bounds the batch size from above.
            denom = g[["backend_wakeups", "calls"]].max(axis=1)
            burst = g["packets"] / denom.where(denom > 0)
        else:
            burst = g["burst"]
        ev = crossing(burst[_busy(g, det).index], det.threshold("burst"), len(g))
        if ev is None:
            continue
        ev.note = "packets per back-end burst (back-end counters)" if counted else "packets per wake-up or call"
        f = _finding(rec, det, path, ev, 1.0 if counted else 0.8)
        f.evidence.append(context("packets", rate(g, "packets"), "pps"))
        f.recommendations = R.ranked(
            [
                R.backend_tunable(
                    path,
                    "burst",
                    None,
                    32,
                    "up to 32 descriptors per pass: one wake-up, one call and one tap syscall batch serve many packets",
                    "a longer pass delays the other queue pairs the thread serves by a few µs",
                ),
                R.backend_tunable(
                    path,
                    "busy_poll_us",
                    None,
                    50,
                    "packets that arrive during the poll window join the next batch instead of a new wake-up",
                    "burns CPU while polling",
                ),
                R.qemu_option(
                    path,
                    "rx_queue_size",
                    256,
                    1024,
                    "a deeper ring lets the guest post more buffers so the back-end can take larger batches",
                    "more guest memory pinned for buffers",
                ),
            ]
        )
        out.append(f)
    return out


def halt_polling(rec: Recording, det: Detector) -> list[Finding]:
    out = []
    for path, g in _paths(rec):
        per_s = g["vcpu_wakeups"] / g["interval_s"]
        waited = g["vcpu_waited"] / g["vcpu_wakeups"].where(g["vcpu_wakeups"] > 0)
        ev = crossing(waited[per_s >= det.threshold("vcpu_wakeups_per_s").value], det.threshold("waited_share"), len(g))
        if ev is None:
            continue
        f = _finding(rec, det, path, ev)
        f.evidence.append(context("vCPU wake-ups", rate(g, "vcpu_wakeups"), "/s", "kvm_vcpu_wakeup"))
        f.recommendations = R.ranked(
            [
                R.halt_poll(None, 200_000),
                R.backend_tunable(
                    path,
                    "call_coalesce",
                    1,
                    4,
                    "fewer interrupts → fewer halts ended by an interrupt",
                    "adds RX latency",
                ),
            ]
        )
        out.append(f)
    return out
