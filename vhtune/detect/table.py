"""The detectors, one row per finding id of ARCHITECTURE.md: what it reads, its thresholds and where each number
comes from, what it means, which findings it explains (``supersedes``: on the same data path those become
consequences and rank below it), and the function that evaluates it (vhtune/detect/{backend,notify,tap,numa}.py).

``priority`` orders findings of equal severity: a specific root cause (a competitor on the CPU, a tiny queue)
ranks above a generic symptom (a busy thread).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vhtune.detect import backend, notify, numa, tap
from vhtune.detect.finding import Finding, Threshold

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording


@dataclass(frozen=True)
class Detector:
    id: str
    title: str
    inputs: tuple[str, ...]  # tables (and columns) it reads
    needs: str  # what the recording must contain for it to work
    thresholds: tuple[Threshold, ...]
    explanation: str
    evaluate: Callable[[Recording, Detector], list[Finding]]
    supersedes: tuple[str, ...] = ()
    priority: int = 0

    def threshold(self, metric: str) -> Threshold:
        for t in self.thresholds:
            if t.metric == metric:
                return t
        raise KeyError(f"{self.id} has no threshold {metric!r}")


MIN_PPS = Threshold("pps", ">=", 1000.0, "pps", "below ~1 kpps notification costs are negligible next to the work")

DETECTORS: tuple[Detector, ...] = (
    Detector(
        "backend-cpu-contention",
        "Back-end thread waits for its CPU",
        ("threads.runq_ns", "runq_hist", "competitors", "discovery.threads.affinity"),
        "sched tracepoints on the back-end thread (any recording); competitors for who held the CPU",
        (
            Threshold(
                "runq_pct",
                ">=",
                10.0,
                "%",
                "runnable-but-waiting ≥ 10 % of wall time: at saturation that is ≥ 10 % of its throughput lost",
            ),
        ),
        "The back-end thread was runnable but another task held its CPU. Every microsecond it waits, its "
        "virtqueues fill up and the guest stalls or drops; the usual cause is a vCPU or a busy process pinned to "
        "the same CPU.",
        backend.contention,
        supersedes=("backend-wakeup-latency", "backend-thread-saturated", "tap-drops"),
        priority=9,
    ),
    Detector(
        "tap-drops",
        "Tap queue drops packets",
        ("taps.drops", "tap_drops.reason_name", "discovery.taps.txqueuelen"),
        "kfree_skb charged to the tap (counters variant: skb->dev via a raw tracepoint; tracepoint variant: "
        "skbaddr → tap map); txqueuelen from discovery",
        (
            Threshold("drop_pct", ">=", 0.1, "%", "0.1 % loss already costs TCP measurable throughput (RFC 3649 §1)"),
            Threshold("drops_per_s", ">=", 10.0, "/s", "ignore a handful of drops (ARP, link-state churn)"),
        ),
        "The kernel freed packets queued on the tap: its ring (txqueuelen slots for tun) was full because its "
        "reader — the back-end or vhost-net — did not drain it fast enough, or the queue is simply too short.",
        tap.tap_drops,
        supersedes=("small-batches",),
        priority=8,
    ),
    Detector(
        "rx-ring-starved",
        "Guest RX ring empty",
        ("backend_queues.drops_no_rx_buffer", "taps.drops", "threads.oncpu_pct", "discovery.taps.txqueuelen"),
        "vhtune back-end counters (exact); without them inferred from tap drops while the back-end is idle",
        (
            Threshold("no_rx_buffer_pct", ">=", 0.1, "%", "as tap-drops: 0.1 % loss is visible to TCP"),
            Threshold(
                "backend_oncpu_pct_max",
                "<=",
                50.0,
                "%",
                "inference only: a reader below 50 % on-CPU is not what keeps the queue full",
            ),
        ),
        "The guest had posted no free RX buffers, so the back-end could not deliver: it dropped frames or stopped "
        "reading the tap, whose queue then overflowed. The guest is not refilling fast enough (vCPU busy or "
        "starved, ring too small).",
        tap.rx_ring_starved,
        supersedes=("tap-drops", "small-batches"),
        priority=8,
    ),
    Detector(
        "kick-storm",
        "Guest kicks the back-end for (almost) every packet",
        ("queues.writes/reads (role kick)", "taps or backend_queues packets"),
        "eventfd probes with kick roles known (the back-end's control socket or vhost fds name them)",
        (
            Threshold(
                "kicks_per_pkt",
                ">=",
                0.5,
                "/pkt",
                "with EVENT_IDX suppression (virtio 1.2 §2.7.10) a busy queue needs ≪ 1 kick per packet",
            ),
            MIN_PPS,
            Threshold(
                "kicks_per_burst",
                ">=",
                0.9,
                "/burst",
                "back-end counters: a kick for every batch means the back-end never suppressed them (§2.7.10)",
            ),
            Threshold("kicks_per_s", ">=", 1000.0, "/s", "per-batch kicks matter only at a sustained rate"),
        ),
        "Each kick is a guest exit (ioeventfd) plus a back-end wake-up. At one per packet the notification path, "
        "not the data path, sets the packet rate: notification suppression or EVENT_IDX is off or ineffective.",
        notify.kick_storm,
        supersedes=("interrupt-storm", "small-batches", "backend-thread-saturated", "vcpu-halt-polling"),
        priority=7,
    ),
    Detector(
        "small-batches",
        "Back-end processes about one packet per pass",
        ("backend_queues.bursts", "threads.wakeups", "queues.writes (role call)"),
        "vhtune back-end counters (exact); without them packets per wake-up or per call (an upper bound)",
        (
            Threshold(
                "burst",
                "<=",
                1.5,
                "pkt",
                "per-pass costs (wake-up, ring index reads, call, syscall) are paid per packet below ~2",
            ),
            MIN_PPS,
        ),
        "The back-end moves about one descriptor per pass, so every fixed per-pass cost — a wake-up, the ring "
        "index reads, a guest interrupt, a tap syscall — is paid per packet. Its burst size is set too low or it "
        "is woken for every packet.",
        notify.small_batches,
        supersedes=("interrupt-storm", "backend-thread-saturated", "vcpu-halt-polling"),
        priority=6,
    ),
    Detector(
        "interrupt-storm",
        "Back-end interrupts the guest for (almost) every packet",
        ("queues.writes (role call)", "queues.injections", "irqs"),
        "eventfd probes with call roles known, or kvm tracepoints (irqfd injections)",
        (
            Threshold(
                "calls_per_pkt",
                ">=",
                0.5,
                "/pkt",
                "NAPI in the guest masks interrupts while polling: a healthy busy queue needs ≪ 1 per packet",
            ),
            MIN_PPS,
            Threshold(
                "calls_per_burst",
                ">=",
                0.9,
                "/burst",
                "back-end counters: a call after every batch ignores a polling driver's suppression (§2.7.7)",
            ),
            Threshold("calls_per_s", ">=", 1000.0, "/s", "per-batch interrupts matter only at a sustained rate"),
        ),
        "Each call is an irqfd write and a KVM interrupt injection, usually a guest exit and a vCPU wake-up. At "
        "one per packet the guest spends its time entering and leaving its interrupt handler.",
        notify.interrupt_storm,
        supersedes=("vcpu-halt-polling",),
        priority=5,
    ),
    Detector(
        "backend-wakeup-latency",
        "Back-end wakes up late",
        ("runq_hist", "threads.runq_ns"),
        "sched tracepoints (run-queue histogram) on the back-end thread",
        (
            Threshold(
                "runq_p99_us",
                ">=",
                1000.0,
                "µs",
                "1 ms is a 256-descriptor ring's worth of packets at 256 kpps: the ring fills before it runs",
            ),
            Threshold("runq_pct_max", "<=", 10.0, "%", "below backend-cpu-contention's threshold (else that one)"),
        ),
        "Most of the time the back-end thread gets its CPU quickly, but the tail of its wake-up → run latency is "
        "long: some kicks wait milliseconds before being served, which shows as jitter and bursts of drops.",
        backend.wakeup_latency,
        priority=4,
    ),
    Detector(
        "backend-thread-saturated",
        "Back-end thread at the limit of one CPU",
        ("threads.oncpu_pct",),
        "sched tracepoints on the back-end thread; not judged for poll-mode back-ends (DPDK, OVS PMD)",
        (Threshold("oncpu_pct", ">=", 90.0, "%", "ARCHITECTURE.md: ≥ ~90 % of one CPU leaves no headroom"),),
        "The back-end thread is on-CPU nearly all the time: it cannot go faster on one CPU. Spread the queues over "
        "more threads, or make each packet cheaper.",
        backend.saturated,
        # A thread that almost never sleeps waits on the run queue only when preempted while running: those
        # waits are the price of being a CPU hog itself, not slow kick → run wake-ups.
        supersedes=("backend-wakeup-latency",),
        priority=3,
    ),
    Detector(
        "cross-numa",
        "Back-end on another NUMA node than its VM",
        ("discovery.cpus", "discovery.threads", "discovery.vms.memory_nodes"),
        "discovery on a multi-node host",
        (Threshold("remote_nodes", ">=", 1.0, "", "any remote-node access adds ~50-100 ns per cache line"),),
        "The back-end thread runs on a NUMA node other than the one holding the guest's memory or vCPUs: every "
        "descriptor and packet copy crosses the interconnect.",
        numa.cross_numa,
        priority=2,
    ),
    Detector(
        "vcpu-halt-polling",
        "vCPU wake-ups dominated by halt/sleep cycles",
        ("vcpu_wakeups.waited/polled",),
        "kvm tracepoints (kvm_vcpu_wakeup), i.e. a KVM guest",
        (
            Threshold("waited_share", ">=", 0.5, "", "more than half the halts slept: halt polling is not catching"),
            Threshold("vcpu_wakeups_per_s", ">=", 1000.0, "/s", "below 1 k wake-ups/s the sleep cost is noise"),
        ),
        "The guest's vCPUs halt and are woken thousands of times a second, and most halts end after a real "
        "sleep: every packet pays a host scheduler wake-up before the guest sees it.",
        notify.halt_polling,
        priority=1,
    ),
)

BY_ID: dict[str, Detector] = {d.id: d for d in DETECTORS}
