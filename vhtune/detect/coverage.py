"""Which detectors a recording lets vhtune judge at all. "No finding" means something only for a detector whose
inputs were recorded; the others are listed as not judged, with what they lacked."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vhtune.analysis.topology import BACKEND_ROLES

if TYPE_CHECKING:
    from vhtune.analysis.recording import Recording


def _backend_threads(rec: Recording) -> str | None:
    t = rec.threads
    return None if len(t) and t["role"].isin(BACKEND_ROLES).any() else "no back-end thread was recorded"


def _packets(rec: Recording) -> str | None:
    return None if len(rec.taps) or rec.has_backend_counters else "no packet counts (no tap, no back-end counters)"


def _roles(rec: Recording, role: str, *extra: bool) -> str | None:
    q = rec.queues
    if (len(q) and (q["role"] == role).any()) or rec.has_backend_counters or any(extra):
        return _packets(rec)
    return f"no eventfd with a known {role} role (record with --control) and no back-end counters"


def _small_batches(rec: Recording) -> str | None:
    return _packets(rec) or (None if rec.has_backend_counters or len(rec.threads) else "no back-end wake-ups")


def _numa(rec: Recording) -> str | None:
    return None if len(set(rec.topology.cpu_node.values())) > 1 else "single NUMA node (or no discovery snapshot)"


RULES: dict[str, Callable[[Recording], str | None]] = {
    "backend-cpu-contention": _backend_threads,
    "backend-wakeup-latency": _backend_threads,
    "backend-thread-saturated": _backend_threads,
    "kick-storm": lambda r: _roles(r, "kick"),
    "interrupt-storm": lambda r: _roles(r, "call", bool(len(r.irqs))),
    "small-batches": _small_batches,
    "tap-drops": lambda r: None if len(r.taps) else "no tap was recorded",
    "rx-ring-starved": lambda r: None if len(r.taps) or r.has_backend_counters else "no tap, no back-end counters",
    "cross-numa": _numa,
    "vcpu-halt-polling": lambda r: None if len(r.vcpu_wakeups) else "no kvm_vcpu_wakeup events (no KVM guest)",
}


def coverage(rec: Recording) -> dict[str, str | None]:
    """Detector id → None when judged, else why it could not be."""
    if rec.intervals == 0:
        return dict.fromkeys(RULES, "the recording holds no interval")
    return {k: rule(rec) for k, rule in RULES.items()}
