"""Tap device knobs: txqueuelen (the qdisc/tx ring length in packets; tun drops with tx_dropped when the
reader — the back-end or vhost-net — falls behind and the queue is full).

A tap may live in another network namespace: target ident {"dev": NAME, "netns": "root" | <ip netns name>}.
"""

from __future__ import annotations

import json
import shlex
import subprocess

from vhtune.errors import TuneError
from vhtune.tune.knob import Knob, Value


def ip_prefix(netns: str) -> list[str]:
    return ["ip"] if netns in ("", "root") else ["ip", "-n", netns]


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise TuneError(f"`{shlex.join(argv)}` failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


class TapTxQueueLenKnob(Knob):
    name = "tap-txqueuelen"

    @property
    def _dev(self) -> tuple[str, str]:
        dev = self.target.ident.get("dev")
        if not dev:
            raise TuneError(f"{self.name} needs a target dev=NAME[,netns=NS], got {self.target.label()}")
        return str(dev), str(self.target.ident.get("netns", "root"))

    def normalize(self, value: Value) -> Value:
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise TuneError(f"txqueuelen must be an integer, got {value!r}") from None
        if not 0 <= n <= 1 << 20:
            raise TuneError(f"txqueuelen {n} is out of range", "use 0..1048576 packets")
        return n

    def read(self) -> Value:
        dev, ns = self._dev
        links = json.loads(_run([*ip_prefix(ns), "-j", "link", "show", "dev", dev]) or "[]")
        if not links:
            raise TuneError(f"tap {dev} not found in netns {ns}")
        return int(links[0].get("txqlen", 0))

    def apply(self, value: Value) -> None:
        dev, ns = self._dev
        _run([*ip_prefix(ns), "link", "set", "dev", dev, "txqueuelen", str(self.normalize(value))])

    def command(self, value: Value) -> str:
        dev, ns = self._dev
        return shlex.join([*ip_prefix(ns), "link", "set", "dev", dev, "txqueuelen", str(self.normalize(value))])
