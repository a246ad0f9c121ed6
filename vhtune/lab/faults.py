"""Fault injection for lab scenarios: composable flags, each undone when the scenario ends.

A fault acts at two moments: ``plan`` (before launch: changes the back-end options or CPU placement) and
``start`` (once traffic runs: spawns a hog, shapes the tap, shrinks a queue). ``stop`` undoes ``start``. Every
fault says what it did in ``notes``; a fault that cannot apply here says so there instead of failing silently.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from vhtune.errors import UsageError
from vhtune.lab.backends import BackendOptions
from vhtune.lab.netns import Netns
from vhtune.lab.proc import LabProcess

HOGS = 3
FAULTS: dict[str, str] = {
    "cpu-hog": f"{HOGS} busy loops pinned to the back-end's CPU for the run",
    "same-cpu": "front-end (vCPU / DPDK lcore) pinned to the back-end's CPU",
    "tiny-txqueuelen": "the tap's txqueuelen set to 4 and the back-end reading in bursts of 1 (slow reader)",
    "burst1": "back-end burst size 1",
    "no-event-idx": "back-end offers no EVENT_IDX and suppresses no notifications (notification storm)",
    "rx-starve": "the front-end stops refilling its RX ring halfway through the run",
    "netem": "netem delay 2ms loss 5% on the netns side of the tap",
    "numa-remote": "back-end memory on another NUMA node than its CPU (only on multi-node hosts)",
}


@dataclass
class Placement:
    backend_cpu: int = 1
    frontend_cpu: int = 0


@dataclass
class FaultContext:
    """What a running scenario exposes to its faults."""

    duration: float
    netns: Netns | None = None
    tap: str | None = None
    backend_cpu: int = 1
    stop_frontend_rx: Callable[[], object] | None = None  # rx-starve hook (scenario-specific)


@dataclass
class FaultSet:
    names: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    _procs: list[LabProcess] = field(default_factory=list)
    _undo: list[Callable[[], object]] = field(default_factory=list)

    @classmethod
    def parse(cls, names: list[str] | tuple[str, ...]) -> FaultSet:
        out: list[str] = []
        for n in names:
            for part in n.split(","):
                part = part.strip()
                if not part:
                    continue
                if part not in FAULTS:
                    raise UsageError(f"fault {part!r} is unknown", hint=f"one of {', '.join(FAULTS)}")
                if part not in out:
                    out.append(part)
        return cls(out)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    # --- before launch --------------------------------------------------------------------------------
    def plan(self, opts: BackendOptions, place: Placement, backend_kind: str) -> None:
        ncpu = os.cpu_count() or 1
        if "burst1" in self or "tiny-txqueuelen" in self:
            opts.burst = 1
            self.notes["burst1" if "burst1" in self else "tiny-txqueuelen"] = "back-end burst 1"
        if "no-event-idx" in self:
            if backend_kind == "dpdk":
                raise UsageError("the no-event-idx fault needs the vhtune back-end", hint="drop --backend dpdk for it")
            opts.event_idx = False
            opts.suppression = False
            self.notes["no-event-idx"] = "EVENT_IDX not offered, notification suppression off"
        if "same-cpu" in self:
            place.frontend_cpu = place.backend_cpu
            self.notes["same-cpu"] = f"front-end and back-end both on CPU {place.backend_cpu}"
        if "numa-remote" in self:
            nodes = [d for d in os.listdir("/sys/devices/system/node") if d.startswith("node")]
            if len(nodes) < 2:
                self.notes["numa-remote"] = f"not applied: this host has {len(nodes)} NUMA node(s)"
            else:
                self.notes["numa-remote"] = "not applied: remote-node placement is not implemented yet"
        if ncpu < 2 and ("same-cpu" in self or "cpu-hog" in self):
            self.notes["cpu"] = "this host has one CPU: every placement is already shared"

    # --- while traffic runs ---------------------------------------------------------------------------
    def start(self, ctx: FaultContext) -> None:
        if "cpu-hog" in self:
            # Bounded: the hog ends itself after the run's duration plus a margin, even if we die.
            limit = ctx.duration + 10
            code = f"import time\nt=time.monotonic()+{limit}\nwhile time.monotonic()<t: pass\n"
            # Several hogs: CFS then leaves the back-end thread at most 1/(HOGS+1) of its CPU while runnable.
            pids = []
            for _ in range(HOGS):
                argv = ["taskset", "-c", str(ctx.backend_cpu), sys.executable, "-c", code]
                hog = LabProcess(argv, name="hog")
                self._procs.append(hog)
                pids.append(hog.pid)
            self.notes["cpu-hog"] = f"{HOGS} busy loops (pids {pids}) on CPU {ctx.backend_cpu}"
        if "netem" in self:
            if ctx.netns is None or ctx.tap is None:
                self.notes["netem"] = "not applied: this scenario has no tap"
            else:
                ns, tap = ctx.netns, ctx.tap
                cmd = ["tc", "qdisc", "replace", "dev", tap, "root", "netem", "delay", "2ms", "loss", "5%"]
                cp = ns.run(cmd, check=False)
                if cp.returncode != 0:
                    # Kernels built without CONFIG_NET_SCH_NETEM (this lab host's 6.18 among them) say
                    # "Specified qdisc kind is unknown".
                    why = (cp.stderr.strip().splitlines() or ["tc failed"])[-1]
                    self.notes["netem"] = f"not applied: this kernel has no netem qdisc ({why})"
                else:
                    self._undo.append(lambda: ns.run(["tc", "qdisc", "del", "dev", tap, "root"], check=False))
                    self.notes["netem"] = f"netem delay 2ms loss 5% on {tap} (netns {ns.name})"
        if "tiny-txqueuelen" in self:
            if ctx.netns is None or ctx.tap is None:
                self.notes["tiny-txqueuelen"] = "not applied: this scenario has no tap"
            else:
                ctx.netns.ip("link", "set", "dev", ctx.tap, "txqueuelen", "4")
                self.notes["tiny-txqueuelen"] = f"{ctx.tap} txqueuelen 4, back-end burst 1"
        if "rx-starve" in self:
            if ctx.stop_frontend_rx is None:
                self.notes["rx-starve"] = "not applied: this scenario's front-end cannot stop refilling"
            else:
                self.notes["rx-starve"] = "front-end stops refilling its RX ring halfway"

    def midpoint(self, ctx: FaultContext) -> None:
        """Called by scenarios halfway through their traffic."""
        if "rx-starve" in self and ctx.stop_frontend_rx is not None:
            ctx.stop_frontend_rx()

    def stop(self) -> None:
        """Undo every fault, newest first; a step that fails does not keep the others from running (its error
        is raised once all have run)."""
        steps: list[Callable[[], object]] = [functools.partial(p.stop, timeout=2.0) for p in reversed(self._procs)]
        steps += reversed(self._undo)
        self._procs.clear()
        self._undo.clear()
        first: Exception | None = None
        for step in steps:
            try:
                step()
            except Exception as exc:  # every other step still runs
                first = first or exc
        if first is not None:
            raise first
