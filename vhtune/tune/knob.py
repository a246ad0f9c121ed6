"""The one small interface every tuning knob implements: read, apply, verify, rollback.

A knob instance is bound to one target (a thread, a tap, a sysctl...). Values are JSON-able so the journal can
store the old value before anything is written and restore it exactly later (the tuned plugin discipline).
Knobs whose change needs a VM restart (QEMU queues, ring sizes, poll_us) are ``restart_required``: they are
planned and printed as commands, never applied.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vhtune.cpulist import format_cpulist as format_cpulist
from vhtune.cpulist import parse_cpulist as _parse
from vhtune.errors import TuneError

Value = Any  # JSON-able: int, str, list[int], dict


@dataclass(frozen=True)
class Target:
    """What a knob acts on, in the terms discovery uses (kind + identifying fields)."""

    kind: str  # "thread", "tap", "sysctl", "module-param", "backend", "vm"
    ident: dict[str, Any] = field(default_factory=dict)

    def label(self) -> str:
        return f"{self.kind}:" + ",".join(f"{k}={v}" for k, v in sorted(self.ident.items()))


class Knob(abc.ABC):
    """One tunable value on one target."""

    name: ClassVar[str]  # stable id, e.g. "thread-affinity"
    restart_required: ClassVar[bool] = False
    survives_reboot: ClassVar[bool] = False  # values that persist (files) must be rolled back after a reboot too

    def __init__(self, target: Target) -> None:
        self.target = target

    @abc.abstractmethod
    def read(self) -> Value:
        """The current value, exactly as apply() takes it."""

    @abc.abstractmethod
    def apply(self, value: Value) -> None:
        """Write value; raise TuneError with one clear sentence on failure."""

    @abc.abstractmethod
    def command(self, value: Value) -> str:
        """The shell command an operator would type to make this change by hand."""

    def normalize(self, value: Value) -> Value:
        """Canonical form of a user-given value (so verify compares like with like)."""
        return value

    @classmethod
    def describe(cls, value: Value) -> str:
        """The value as an operator reads it in a table: key=value pairs for a dict, the text otherwise."""
        if isinstance(value, dict):
            return ", ".join(f"{k}={v}" for k, v in value.items())
        return str(value)

    def pinned(self) -> Target:
        """The target as the journal keeps it: resolved to the object that holds the value when that object is
        found through another (a cgroup through a task in it), so a rollback restores that object itself."""
        return self.target

    def verify(self, expected: Value) -> bool:
        return bool(self.normalize(self.read()) == self.normalize(expected))

    def rollback(self, old: Value) -> None:
        self.apply(old)
        if not self.verify(old):
            raise TuneError(f"{self.name} on {self.target.label()} did not return to {old!r}")


def parse_cpulist(text: str) -> list[int]:
    """'0-2,5' → [0, 1, 2, 5], or a TuneError that says how to write it."""
    try:
        return _parse(text)
    except ValueError:
        raise TuneError(f"{text!r} is not a CPU list", "write it like 0-2,5") from None
