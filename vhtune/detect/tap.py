"""Detectors on the tap and the guest's RX ring: tap drops (the tap's queue overflowed or the kernel dropped on
it, by drop reason) and RX-ring starvation (the guest posted no RX buffers, so the back-end had to drop or
stop reading the tap). Inputs: taps and tap_drops (net/skb tracepoints), discovery's txqueuelen, back-end
counters (backend_queues) when the recording has them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from vhtune.detect import recommend as R
from vhtune.detect.evaluate import context, crossing, found, rate
from vhtune.detect.finding import Finding
from vhtune.detect.notify import _finding as path_finding
from vhtune.detect.notify import _paths
from vhtune.discover.model import tap_ref

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording
    from vhtune.detect.table import Detector

ADEQUATE_TXQUEUELEN = 256  # below this a tap queue is the suspect by itself (tun's ring = txqueuelen slots)


def _txqueuelen(rec: Recording, ifname: str, netns: str | None = None) -> int | None:
    v = rec.topology.tap(ifname, netns).get("txqueuelen")
    return int(v) if v is not None else None


def _reasons(rec: Recording, ifname: str, netns: str) -> str:
    d = rec.tap_drops
    if not len(d):
        return ""
    d = d[(d["ifname"] == ifname) & (d["netns"] == netns)]
    g = pd.DataFrame(d.groupby(["direction", "reason_name"], as_index=False)["count"].sum())
    g = g.sort_values("count", ascending=False).head(3)
    return ", ".join(f"{r['reason_name']} ({r['direction']}) {int(r['count'])}" for r in g.to_dict("records"))


def tap_drops(rec: Recording, det: Detector) -> list[Finding]:
    out = []
    tm = rec.tap_metrics
    th = det.threshold("drop_pct")
    min_rate = det.threshold("drops_per_s").value
    # One netns per VM (Kata Containers) gives several taps of one name: each (netns, name) is its own tap.
    for (ns, ifname), g in tm.groupby(["netns", "ifname"], sort=True):
        name, recorded_ns = str(ifname), str(ns)
        ev = crossing(g["drop_pct"][g["drops_per_s"] >= min_rate], th, len(g))
        if ev is None:
            continue
        ev.note = _reasons(rec, name, recorded_ns)
        qlen = _txqueuelen(rec, name, recorded_ns)
        pathname = str(g["path"].iloc[-1])
        f = found(
            rec,
            det,
            ev,
            subject=f"tap {tap_ref(recorded_ns, name)}",
            subject_kind="tap",
            path=pathname,
            details={"ifname": name, "netns": recorded_ns, "txqueuelen": qlen},
            context_evidence=(context("drops", rate(g, "drops"), "/s"),),
            # tun's ring holds txqueuelen frames: a short one overflows on any burst longer than it, however
            # promptly the reader runs, so a reader waiting for its CPU does not explain these drops away.
            self_explained=qlen is not None and qlen < ADEQUATE_TXQUEUELEN,
        )
        if qlen is not None:
            f.evidence.append(context("txqueuelen", float(qlen), "packets", "tun's ring holds txqueuelen skbs"))
        # the netns the tap was recorded in; a recording that does not know it: where discovery saw the name
        netns = recorded_ns if recorded_ns != "?" else str(rec.topology.tap(name, None).get("netns") or "root")
        proposed = 1000 if qlen is None or qlen < 1000 else min(4 * qlen, 10_000)
        recs = [R.txqueuelen(name, netns, qlen, proposed)]
        path = rec.topology.by_name(pathname)
        if path is not None:
            recs.append(
                R.backend_tunable(
                    path,
                    "burst",
                    None,
                    32,
                    "the back-end reads up to 32 frames per pass from the tap, draining its queue faster",
                    "a longer pass delays the other queues the thread serves",
                )
            )
            if path.frontend_pids:
                recs += R.two_queue_pairs(
                    path,
                    "a multiqueue tap spreads the load over two queues and two back-end threads",
                    "more threads and interrupts",
                )
        f.recommendations = R.ranked(recs)
        out.append(f)
    return out


def _generator_stalls(rec: Recording, pid: int | None) -> pd.Series | None:
    """Per interval: did a generating back-end's RX queues deliver nothing after having delivered before?"""
    bq = rec.backend_queues
    if pid is None or not len(bq):
        return None
    rx = bq[(bq["pid"] == pid) & (bq["dir"] == "rx")].groupby(level="ts")["packets"].sum()
    if not len(rx) or not (rx > 0).any():
        return None
    started = (rx > 0).cummax()
    return started & (rx == 0)


def rx_ring_starved(rec: Recording, det: Detector) -> list[Finding]:
    out = []
    th = det.threshold("no_rx_buffer_pct")
    idle = det.threshold("backend_oncpu_pct_max").value
    for path, g in _paths(rec):
        counted = bool(g["no_rx_buffer_drops"].sum() > 0)
        stalled = (
            _generator_stalls(rec, path.backend_pid) if str(path.tunables.get("port", "")).startswith("gen") else None
        )
        if counted:
            pct = 100.0 * g["no_rx_buffer_drops"] / g["packets"].where(g["packets"] > 0)
            note = "back-end drops for lack of guest RX buffers (back-end counters)"
        elif stalled is not None and stalled.any():
            pct = 100.0 * stalled.astype("float64")
            note = "a generator port always has frames: its RX delivery stopped because the ring had no free buffer"
        else:
            keys = [k for k, p in rec.topology.path_of_tap_key().items() if p == path.name]
            qlens = [_txqueuelen(rec, n, ns) for ns, n in keys] or [_txqueuelen(rec, t) for t in path.taps]
            if not path.taps or any(q is not None and q < ADEQUATE_TXQUEUELEN for q in qlens):
                continue  # a tiny tap queue explains the drops by itself (tap-drops)
            oncpu = g["backend_oncpu_pct"].fillna(0.0)
            pct = (100.0 * g["tap_drops"] / g["packets"].where(g["packets"] > 0)).where(oncpu < idle)
            note = "tap queue overflowing while its reader, the back-end, sat idle (no counters: inferred)"
        ev = crossing(pct, th, len(g), note)
        if ev is None:
            continue
        f = path_finding(rec, det, path, ev, 1.0 if counted else 0.7)
        f.evidence.append(context("calls", rate(g, "calls"), "/s", "RX completions signalled to the guest"))
        f.recommendations = R.ranked(
            [
                R.qemu_option(
                    path,
                    "rx_queue_size",
                    256,
                    1024,
                    "4x the RX buffers posted: bursts the guest is slow to refill no longer find the ring empty",
                    "more guest memory pinned for RX buffers",
                ),
                R.guest_command(
                    f"guest of {path.name}",
                    "sysctl -w net.core.netdev_budget=600   # inside the guest; and give its vCPUs CPU time",
                    "the guest's NAPI refills the RX ring more often per softirq",
                    "longer softirq runs inside the guest",
                    "sysctl -w net.core.netdev_budget=300",
                ),
                *R.two_queue_pairs(path, "two RX rings refilled by two vCPUs", "more threads and interrupts"),
            ]
        )
        out.append(f)
    return out
