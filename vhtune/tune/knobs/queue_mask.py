"""Per-queue CPU masks of a tap: XPS (which CPUs transmit on tx-N) and RPS (which CPUs run the protocol
stack for packets received on rx-N). Both live in sysfs under /sys/class/net/DEV/queues/, as a hex CPU mask;
sysfs shows the network namespace it was mounted in, so a tap in another netns is reached through
`ip netns exec NS` (which mounts that netns's sysfs for the command). Runtime only: lost on reboot.

Target ident {"dev": NAME, "netns": "root" | NS, "queue": "tx-0" | "rx-0"}; value: a CPU list ("0-1") or [0, 1].
"""

from __future__ import annotations

import re
import subprocess

from vhtune.cpulist import format_cpulist
from vhtune.errors import TuneError
from vhtune.tune.knob import Knob, Value, parse_cpulist

_QUEUE = re.compile(r"^(tx|rx)-(\d+)$")
_DEV = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def mask_to_cpus(text: str) -> list[int]:
    """sysfs mask "00000003" or "ff,00000000" (32-bit groups, most significant first) → [0, 1]."""
    bits = int(text.strip().replace(",", "") or "0", 16)
    return [i for i in range(bits.bit_length()) if bits >> i & 1]


def cpus_to_mask(cpus: list[int]) -> str:
    return format(sum(1 << c for c in cpus), "x")


class QueueMaskKnob(Knob):
    name = "tap-queue-mask"

    def _where(self) -> tuple[str, str, str]:
        dev = str(self.target.ident.get("dev", ""))
        ns = str(self.target.ident.get("netns", "root"))
        queue = str(self.target.ident.get("queue", ""))
        m = _QUEUE.match(queue)
        if not _DEV.match(dev) or not m:
            raise TuneError(f"{self.name} needs dev=NAME,queue=tx-N|rx-N[,netns=NS], got {self.target.label()}")
        leaf = "xps_cpus" if m.group(1) == "tx" else "rps_cpus"
        return ns, f"/sys/class/net/{dev}/queues/{queue}/{leaf}", dev

    def _argv(self, ns: str, *cmd: str) -> list[str]:
        return list(cmd) if ns in ("", "root") else ["ip", "netns", "exec", ns, *cmd]

    def normalize(self, value: Value) -> Value:
        if isinstance(value, int):
            return [value]
        if isinstance(value, str):
            return parse_cpulist(value)
        try:
            cpus = sorted({int(c) for c in value})
        except (TypeError, ValueError):
            raise TuneError(f"{value!r} is not a CPU list", "write it like 0-2,5") from None
        if any(c < 0 for c in cpus):
            raise TuneError(f"{value!r} names a negative CPU", "write it like 0-2,5")
        return cpus

    def read(self) -> Value:
        ns, path, dev = self._where()
        proc = subprocess.run(self._argv(ns, "cat", path), capture_output=True, text=True, timeout=10)
        if proc.returncode != 0:
            raise TuneError(f"cannot read {path} of {dev} in netns {ns}: {proc.stderr.strip()}")
        return mask_to_cpus(proc.stdout)

    def apply(self, value: Value) -> None:
        ns, path, dev = self._where()
        mask = cpus_to_mask(self.normalize(value))
        proc = subprocess.run(
            self._argv(ns, "tee", path), input=mask + "\n", capture_output=True, text=True, timeout=10
        )
        if proc.returncode != 0:
            raise TuneError(f"cannot write {path} of {dev} in netns {ns}: {proc.stderr.strip()}")

    def command(self, value: Value) -> str:
        ns, path, _ = self._where()
        mask = cpus_to_mask(self.normalize(value))
        prefix = "" if ns in ("", "root") else f"ip netns exec {ns} "
        return f"echo {mask} | {prefix}tee {path}   # CPUs {format_cpulist(self.normalize(value))}"
