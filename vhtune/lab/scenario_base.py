"""What every lab scenario shares: its options, its registry entry, and the small helpers its summary uses.

Addresses exist only inside a scenario's own netns: the netns side of the tap is ``HOST_CIDR``, the guest is
``GUEST_CIDR`` (the guest is not in any host netns).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vhtune.errors import UsageError
from vhtune.lab.backends import BACKENDS, BackendOptions, LabBackend, make_backend
from vhtune.lab.faults import FaultSet, Placement
from vhtune.lab.names import lab_name
from vhtune.lab.netns import Netns
from vhtune.lab.proc import wait_for

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


def rate(n: int | float, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else 0.0


def strip(st: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in st.items() if k != "raw"}


def notifications(st: dict[str, Any]) -> dict[str, float | None]:
    """Kicks and calls per packet and packets per burst (None when the back-end does not count them)."""
    pkts = int(st["from_guest_packets"]) + int(st["to_guest_packets"])
    out: dict[str, float | None] = {}
    for key, name in (("kicks", "kicks_per_packet"), ("calls", "calls_per_packet")):
        out[name] = None if st.get(key) is None else round(int(st[key]) / max(pkts, 1), 5)
    out["packets_per_burst"] = None if not st.get("bursts") else round(pkts / int(st["bursts"]), 2)
    return out


def backend_pid(be: LabBackend) -> int:
    proc = getattr(be, "proc", None) or getattr(getattr(be, "pmd", None), "proc", None)
    return int(proc.pid) if proc is not None else 0


def tap_backend(
    opts: RunOptions, faults: FaultSet, stack: contextlib.ExitStack, *, quiet_ipv6: bool = False
) -> tuple[Netns, str, LabBackend, Placement]:
    """A netns, the back-end serving a tap inside it (faults planned), and ``HOST_CIDR`` on the tap.
    ``quiet_ipv6``: no IPv6 in the netns (no router solicitations or DAD frames), so the tap carries only the
    scenario's own traffic and its counters compare exactly."""
    ns = stack.enter_context(Netns())
    if quiet_ipv6:
        ns.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])
    tap = lab_name("tp")
    place = Placement()
    bopts = BackendOptions(port="tap", tap=tap, netns=ns, cpu=place.backend_cpu, queues=opts.queues)
    faults.plan(bopts, place, opts.backend)
    be = make_backend(opts.backend, bopts)
    stack.enter_context(be)
    wait_for(lambda: ns.has_link(tap), 10.0, f"the back-end's tap {tap}")
    ns.addr(tap, HOST_CIDR)
    return ns, tap, be, place
