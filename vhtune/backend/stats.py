"""Per-queue counters and live tunables shared by the workers, the control socket and the exit report."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from vhtune.cpulist import parse_cpulist
from vhtune.errors import UsageError

HIST_BUCKETS = 10  # burst sizes 1, 2-3, 4-7, …, 256-511, 512+


@dataclass
class QueueStats:
    packets: int = 0
    bytes: int = 0
    kicks: int = 0
    calls: int = 0
    wakeups: int = 0
    bursts: int = 0
    hist: list[int] = field(default_factory=lambda: [0] * HIST_BUCKETS)
    drops: dict[str, int] = field(default_factory=dict)

    def burst(self, n: int) -> None:
        self.bursts += 1
        self.hist[min(n.bit_length() - 1, HIST_BUCKETS - 1)] += 1

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hist"] = {f"{1 << i}" + ("+" if i == HIST_BUCKETS - 1 else ""): c for i, c in enumerate(self.hist)}
        d["drops"] = dict(self.drops)
        return d


RX_REFILL = ("wait", "drop")


@dataclass
class Tunables:
    """Knobs read by every worker on each loop; ``set`` validates before changing anything."""

    queue_pairs: int = 1
    burst: int = 32
    busy_poll_us: int = 0
    event_idx: bool = True
    suppression: bool = True
    call_coalesce: int = 1  # signal the driver at most once per this many bursts (always before sleeping)
    cpus: list[int] = field(default_factory=list)  # worker affinity; empty = inherit
    queue_cpus: dict[int, list[int]] = field(default_factory=dict)  # per-queue override of cpus
    rx_refill: str = "wait"  # RX ring empty: wait for a refill kick (tap queue backs up) or read and drop
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    LIVE = (
        "burst",
        "busy_poll_us",
        "event_idx",
        "suppression",
        "call_coalesce",
        "cpus",
        "queue_cpus",
        "rx_refill",
    )

    def cpus_for(self, queue: int) -> list[int]:
        return self.queue_cpus.get(queue, self.cpus)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("queue_pairs", *self.LIVE)}

    def set(self, **kv: Any) -> None:
        new: dict[str, Any] = {}
        for k, v in kv.items():
            if k == "queue_pairs":
                raise UsageError("queue_pairs is fixed for the daemon's life", "restart with --queues N")
            if k not in self.LIVE:
                raise UsageError(f"unknown tunable {k!r}", f"known: {', '.join(self.LIVE)}")
            new[k] = _check(k, v)
        with self.lock:
            for k, v in new.items():
                setattr(self, k, v)


def _check(k: str, v: Any) -> Any:
    if k in ("event_idx", "suppression"):
        if not isinstance(v, bool):
            raise UsageError(f"{k} must be true or false, got {v!r}")
        return v
    if k == "rx_refill":
        if v not in RX_REFILL:
            raise UsageError(f"rx_refill must be one of {RX_REFILL}, got {v!r}")
        return v
    if k == "queue_cpus":
        # JSON object keys are strings: {"1": [0], "3": [1]}
        if not isinstance(v, dict):
            raise UsageError(f'queue_cpus must map queue index to a CPU list, e.g. {{"1": [0]}}, got {v!r}')
        out: dict[int, list[int]] = {}
        for q, cl in v.items():
            try:
                qi = int(q)
            except (TypeError, ValueError):
                raise UsageError(f"queue_cpus: {q!r} is not a queue index") from None
            out[qi] = _check("cpus", cl)
        return out
    if k == "cpus":
        if not isinstance(v, list) or not all(isinstance(c, int) and c >= 0 for c in v):
            raise UsageError(f"cpus must be a list of CPU numbers, got {v!r}")
        return list(v)
    bounds = {"burst": (1, 256), "busy_poll_us": (0, 1_000_000), "call_coalesce": (1, 1024)}
    lo, hi = bounds[k]
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise UsageError(f"{k} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def parse_queue_cpus(items: tuple[str, ...] | list[str]) -> dict[int, list[int]]:
    """``("1=0", "3=1")`` → {1: [0], 3: [1]}."""
    out: dict[int, list[int]] = {}
    for item in items:
        q, sep, cl = item.partition("=")
        if not sep or not q.isdigit():
            raise UsageError(f"bad --queue-cpu {item!r}", "use QUEUE=CPULIST, e.g. 1=0 or 3=0-1")
        out[int(q)] = parse_cpus(cl)
    return out


def parse_cpus(text: str) -> list[int]:
    """``0,2-3`` → [0, 2, 3]."""
    try:
        return parse_cpulist(text)
    except ValueError:
        raise UsageError(f"bad CPU list {text!r}", "use e.g. 0 or 0,1 or 0-1") from None
