"""Host-wide kernel knobs: a short allow-list of sysctls and module parameters that matter to vhost paths.

Only listed keys can be touched: a tuner must never become a generic "write any /proc/sys file" tool.
- net.core.busy_poll / busy_read: µs a socket poll/read busy-waits on the device queue before sleeping.
- net.core.netdev_max_backlog / netdev_budget: per-CPU backlog length and packets per NET_RX softirq round.
- kvm.halt_poll_ns: how long a halting vCPU polls before it sleeps; high values burn host CPU that a back-end
  sharing the core could use, low values add wake-up latency (kvm_vcpu_wakeup "waited").
Module parameters written through /sys do not survive a reboot; neither do runtime sysctl writes.
"""

from __future__ import annotations

from pathlib import Path

from vhtune.errors import TuneError
from vhtune.tune.knob import Knob, Value

SYSCTLS = {
    "net.core.busy_poll": (0, 1_000_000),
    "net.core.busy_read": (0, 1_000_000),
    "net.core.netdev_max_backlog": (1, 1 << 24),
    "net.core.netdev_budget": (1, 1 << 20),
    "net.core.netdev_budget_usecs": (1, 1_000_000),
}
MODULE_PARAMS = {
    "kvm.halt_poll_ns": (0, 1_000_000_000),
    "kvm.halt_poll_ns_grow": (0, 1024),
    "kvm.halt_poll_ns_shrink": (0, 1024),
}


class _IntFileKnob(Knob):
    allowed: dict[str, tuple[int, int]]
    key_field: str

    @property
    def key(self) -> str:
        key = str(self.target.ident.get(self.key_field, ""))
        if key not in self.allowed:
            raise TuneError(f"{self.name} {key!r} is not one vhtune tunes", f"allowed: {', '.join(self.allowed)}")
        return key

    def path(self) -> Path:
        raise NotImplementedError

    def normalize(self, value: Value) -> Value:
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise TuneError(f"{self.key} takes an integer, got {value!r}") from None
        lo, hi = self.allowed[self.key]
        if not lo <= n <= hi:
            raise TuneError(f"{self.key}={n} is outside {lo}..{hi}")
        return n

    def read(self) -> Value:
        try:
            return int(self.path().read_text().split()[0])
        except FileNotFoundError:
            raise TuneError(f"{self.key} does not exist on this host ({self.path()})") from None

    def apply(self, value: Value) -> None:
        path = self.path()
        if path.exists() and not path.stat().st_mode & 0o222:
            # e.g. kvm built with read-only parameters (mode 0444): only the VMM can change halt polling, per VM,
            # with KVM_ENABLE_CAP(KVM_CAP_HALT_POLL) on the VM fd.
            raise TuneError(f"{self.key} is read-only on this kernel ({path} has mode {path.stat().st_mode & 0o777:o})")
        try:
            self.path().write_text(f"{self.normalize(value)}\n")
        except OSError as exc:
            raise TuneError(f"cannot write {self.path()}: {exc.strerror}", "run as root") from None


class SysctlKnob(_IntFileKnob):
    name = "sysctl"
    allowed = SYSCTLS
    key_field = "key"

    def path(self) -> Path:
        return Path("/proc/sys") / self.key.replace(".", "/")

    def command(self, value: Value) -> str:
        return f"sysctl -w {self.key}={self.normalize(value)}"


class ModuleParamKnob(_IntFileKnob):
    name = "module-param"
    allowed = MODULE_PARAMS
    key_field = "key"

    def path(self) -> Path:
        module, _, param = self.key.partition(".")
        return Path("/sys/module") / module / "parameters" / param

    def command(self, value: Value) -> str:
        return f"echo {self.normalize(value)} > {self.path()}"
