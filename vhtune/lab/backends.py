"""Back-ends a lab scenario can put behind its vhost-user socket, with one stats vocabulary for both.

- ``vhtune``: the reference back-end, ``python -m vhtune.backend --socket S --port P --control C``; stats come
  from its control socket (per queue: packets, bytes, kicks, calls, bursts, drops).
- ``dpdk``: DPDK's vhost PMD in testpmd: sink = rxonly, echo = macswap, gen = txonly, tap = io between the
  vhost port and a ``net_tap`` port (testpmd then runs inside the tap's netns, so the tap is born there).

Directions are the guest's: ``from_guest`` is what the back-end took off the guest's TX rings, ``to_guest``
what it put on the guest's RX rings. Virtio-net queue 2k is RX, 2k+1 is TX.
"""

from __future__ import annotations

import contextlib
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Self

from vhtune.errors import LabError, UsageError, VhtuneError
from vhtune.lab import dpdk
from vhtune.lab.names import lab_name, run_dir
from vhtune.lab.netns import Netns
from vhtune.lab.proc import LabProcess, wait_for

BACKENDS = ("vhtune", "dpdk")


@dataclass
class BackendOptions:
    port: str = "sink"  # sink | echo | gen | tap (the tap lives in ``netns``)
    queues: int = 1
    cpu: int | None = 1  # the back-end's data-path CPU
    burst: int = 32
    event_idx: bool = True
    suppression: bool = True
    gen_size: int = 64
    tap: str | None = None
    netns: Netns | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class LabBackend(ABC):
    kind: str

    def __init__(self, opts: BackendOptions) -> None:
        if opts.port not in ("sink", "echo", "gen", "tap"):
            raise UsageError(f"back-end port {opts.port!r} is unknown", hint="sink, echo, gen or tap")
        if opts.port == "tap" and (not opts.tap or opts.netns is None):
            raise UsageError("a tap port needs a tap name and the lab netns")
        self.opts = opts
        self.socket = run_dir() / f"{lab_name('s')}.sock"

    @abstractmethod
    def launch(self) -> None:
        """Start serving; returns once the socket accepts a front-end."""

    @abstractmethod
    def stats(self) -> dict[str, Any]:
        """``{from_guest_packets, from_guest_bytes, to_guest_packets, drops:{..}, kicks, calls, raw}``."""

    def finish(self) -> dict[str, Any]:
        """Final stats once the front-end is done (a back-end may stop forwarding to collect them)."""
        return self.stats()

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def thread_ids(self) -> list[int]:
        """Data-path thread ids (what a CPU fault pins or competes with)."""

    def __enter__(self) -> Self:
        try:
            self.launch()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VhtuneBackend(LabBackend):
    kind = "vhtune"

    def __init__(self, opts: BackendOptions) -> None:
        super().__init__(opts)
        self.control = self.socket.with_suffix(".ctl")
        self.log = self.socket.with_suffix(".log")
        self.proc: LabProcess | None = None
        self.last: dict[str, Any] | None = None
        self.output = ""

    def argv(self) -> list[str]:
        o = self.opts
        port = {"tap": f"tap:{o.tap}@{o.netns.name if o.netns else ''}", "gen": f"gen:{o.gen_size}"}.get(o.port, o.port)
        # The lean entry point: same options as `vhtune backend`, without the analysis stack's imports.
        argv = [sys.executable, "-m", "vhtune.backend", "--socket", str(self.socket), "--port", port]
        argv += ["--control", str(self.control), "--queues", str(o.queues), "--burst", str(o.burst)]
        argv += ["--event-idx" if o.event_idx else "--no-event-idx"]
        argv += ["--notify-suppression" if o.suppression else "--no-notify-suppression"]
        if o.cpu is not None:
            argv += ["--cpu", str(o.cpu)]
        for k, v in o.extra.items():
            argv += [f"--{k.replace('_', '-')}"] if v is True else [f"--{k.replace('_', '-')}", str(v)]
        return argv

    def launch(self) -> None:
        self.proc = LabProcess(self.argv(), log=self.log, name="vhtune backend")
        wait_for(lambda: self.socket.exists() and self.control.exists(), 15.0, "the back-end's sockets", self.proc)

    def _client(self) -> Any:
        from vhtune.backend.control_client import ControlClient

        return ControlClient(str(self.control), timeout=5.0)

    def raw_stats(self) -> dict[str, Any]:
        try:
            self.last = dict(self._client().stats())
        except VhtuneError as exc:
            if self.last is None:
                raise LabError(f"the vhtune back-end does not answer: {exc}") from exc
        assert self.last is not None
        return self.last

    def stats(self) -> dict[str, Any]:
        return normalize_vhtune(self.raw_stats())

    def set(self, **kv: Any) -> None:
        self._client().set(**kv)

    @property
    def pid(self) -> int:
        """The back-end process's pid, once launched."""
        if self.proc is None:
            raise LabError("the vhtune back-end has not been launched")
        return self.proc.pid

    def thread_ids(self) -> list[int]:
        qs = self.raw_stats().get("queues", [])
        return sorted({int(q["tid"]) for q in qs if q.get("tid")})

    def close(self) -> None:
        if self.proc is not None and self.proc.alive():
            with contextlib.suppress(LabError):
                self.raw_stats()
        if self.proc is not None:
            self.proc.stop(timeout=5.0)
            self.output = self.proc.output()
        for p in (self.socket, self.control, self.log):
            p.unlink(missing_ok=True)


def normalize_vhtune(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "from_guest_packets": 0,
        "from_guest_bytes": 0,
        "to_guest_packets": 0,
        "to_guest_bytes": 0,
        "kicks": 0,
        "calls": 0,
        "bursts": 0,
        "drops": {},
    }
    for q in raw.get("queues", []):
        side = "from_guest" if q.get("dir") == "tx" else "to_guest"
        out[f"{side}_packets"] += int(q.get("packets", 0))
        out[f"{side}_bytes"] += int(q.get("bytes", 0))
        for k in ("kicks", "calls", "bursts"):
            out[k] += int(q.get(k, 0))
        for reason, n in (q.get("drops") or {}).items():
            out["drops"][reason] = out["drops"].get(reason, 0) + int(n)
    out["raw"] = raw
    return out


class DpdkBackend(LabBackend):
    kind = "dpdk"
    MODES = {"sink": "rxonly", "echo": "macswap", "gen": "txonly", "tap": "io"}

    def __init__(self, opts: BackendOptions) -> None:
        super().__init__(opts)
        if not opts.event_idx or not opts.suppression:
            raise UsageError(
                "the DPDK back-end has no switch for event-idx/notification suppression",
                hint="use --backend vhtune for that fault",
            )
        o = opts
        self.pmd = dpdk.backend(
            self.socket,
            mode=self.MODES[o.port],
            queues=o.queues,
            fwd_cpu=o.cpu if o.cpu is not None else 1,
            tap=o.tap if o.port == "tap" else None,
            netns=o.netns if o.port == "tap" else None,
            burst=o.burst,
            txpkts=max(64, o.gen_size),
        )
        self.final: list[dpdk.PortStats] | None = None

    def launch(self) -> None:
        self.pmd.launch()
        self.pmd.start()
        wait_for(self.socket.exists, 10.0, "the DPDK vhost socket", self.pmd.proc)

    def port_stats(self) -> list[dpdk.PortStats]:
        if self.pmd.proc is not None and self.pmd.proc.alive():
            self.final = self.pmd.port_stats()
        return self.final or []

    def stats(self) -> dict[str, Any]:
        ports = self.port_stats()
        vh = next((p for p in ports if p.port == 0), dpdk.PortStats(0))
        out: dict[str, Any] = {
            "from_guest_packets": vh.rx_packets,
            "from_guest_bytes": vh.rx_bytes,
            "to_guest_packets": vh.tx_packets,
            "to_guest_bytes": vh.tx_bytes,
            "kicks": None,  # testpmd does not count notifications
            "calls": None,
            "bursts": None,
            "drops": {"rx_missed": vh.rx_missed, "tx_errors": vh.tx_errors, "rx_nombuf": vh.rx_nombuf},
        }
        out["raw"] = {"ports": [p.__dict__ for p in ports]}
        return out

    def finish(self) -> dict[str, Any]:
        st = self.stats()
        if self.pmd.proc is not None and self.pmd.proc.alive() and self.pmd.started:
            fwd = self.pmd.stop()
            vh = next((f for f in fwd if f.port == 0), None)
            if vh is not None:
                # txonly/io drops when the guest's RX ring is full are only in the forward stats.
                st["drops"]["to_guest_ring_full"] = vh.tx_dropped
                st["raw"]["forward"] = [f.__dict__ for f in fwd]
        return st

    def thread_ids(self) -> list[int]:
        if self.pmd.proc is None:
            return []
        return dpdk.lcore_tids(self.pmd)

    def close(self) -> None:
        with contextlib.suppress(LabError):
            self.port_stats()
        self.pmd.close()
        self.socket.unlink(missing_ok=True)


def make_backend(kind: str, opts: BackendOptions) -> LabBackend:
    if kind == "vhtune":
        return VhtuneBackend(opts)
    if kind == "dpdk":
        return DpdkBackend(opts)
    raise UsageError(f"back-end {kind!r} is unknown", hint=f"one of {', '.join(BACKENDS)}")
