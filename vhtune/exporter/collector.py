"""A prometheus-client Collector over ExporterState: each scrape renders a consistent copy under the lock."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from vhtune.exporter.state import HIST_BUCKETS, ExporterState

HELP = {
    "vhtune_thread_cpu_seconds_total": "CPU time of a data-path thread (sched_switch accounting)",
    "vhtune_thread_wakeups_total": "sched_wakeup events of a data-path thread",
    "vhtune_thread_migrations_total": "sched_migrate_task events of a data-path thread",
    "vhtune_thread_switches_total": "context switches out of a data-path thread, by kind",
    "vhtune_eventfd_writes_total": "write() calls on a kick/call eventfd (one notification each)",
    "vhtune_eventfd_reads_total": "read() calls draining a kick/call eventfd",
    "vhtune_eventfd_injections_total": "KVM interrupt injections run inside writes to this eventfd (irqfd)",
    "vhtune_kvm_injections_total": "KVM interrupt injections (kvm_set_irq, kvm_msi_set_irq)",
    "vhtune_vcpu_halt_wakeups_total": "vCPU halts that ended, by halt-polling outcome (kvm_vcpu_wakeup)",
    "vhtune_lost_events_total": "probe events not accounted because a BPF map was full",
    "vhtune_tap_packets_total": "packets through a tap seen by net tracepoints, by direction",
    "vhtune_tap_bytes_total": "bytes through a tap seen by net tracepoints, by direction",
    "vhtune_tap_drops_total": "kfree_skb of skbs last seen on the tap",
    "vhtune_tap_drops_by_reason_total": "tap drops by the kernel's skb drop reason",
}


def _split(labels: tuple[tuple[str, str], ...]) -> tuple[list[str], list[str]]:
    return [k for k, _ in labels], [v for _, v in labels]


class StateCollector(Collector):
    def __init__(self, state: ExporterState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state
        with s.lock:
            for name, series in s.counters.items():
                if not series:
                    continue
                keys, _ = _split(next(iter(series)))
                fam = CounterMetricFamily(name.removesuffix("_total"), HELP.get(name, name), labels=keys)
                for lab, v in series.items():
                    fam.add_metric(_split(lab)[1], v)
                yield fam
            oncpu = s.gauges.get("vhtune_thread_oncpu_ratio", {})
            if oncpu:
                keys, _ = _split(next(iter(oncpu)))
                g = GaugeMetricFamily(
                    "vhtune_thread_oncpu_ratio", "share of one CPU a data-path thread ran, last interval", labels=keys
                )
                for lab, v in oncpu.items():
                    g.add_metric(_split(lab)[1], v)
                yield g
            if s.runq:
                keys, _ = _split(next(iter(s.runq)))
                h = HistogramMetricFamily(
                    "vhtune_thread_runq_wait_seconds",
                    "time a data-path thread waited runnable before it ran (log2 buckets from the kernel)",
                    labels=keys,
                )
                for lab, hist in s.runq.items():
                    cum, buckets = 0, []
                    for b in range(HIST_BUCKETS):
                        cum += hist.buckets[b]
                        # bucket b holds waits in [2^b, 2^(b+1)) ns
                        buckets.append((repr(2 ** (b + 1) / 1e9), float(cum)))
                    buckets.append(("+Inf", float(cum)))
                    h.add_metric(_split(lab)[1], buckets, hist.sum_ns / 1e9)
                yield h
            f = GaugeMetricFamily(
                "vhtune_finding_active", "1 while a detector finding is active", labels=["id", "subject", "severity"]
            )
            for fd in s.findings:
                f.add_metric([fd.id, fd.subject, fd.severity], 1.0)
            yield f
            if s.info:
                yield InfoMetricFamily("vhtune_probe", "probe families and variants in use", value=dict(s.info))
            yield GaugeMetricFamily("vhtune_intervals", "recorder intervals folded into these metrics", s.intervals)
            yield GaugeMetricFamily(
                "vhtune_last_update_timestamp_seconds", "when the recorder last updated", s.last_update
            )
