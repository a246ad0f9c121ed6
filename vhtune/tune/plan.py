"""A plan: the list of changes `vhtune tune apply` will make, each with current → proposed and its command.

The plan id is a hash of what it changes, so `apply ID` applies exactly what `plan` showed.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vhtune.errors import TuneError
from vhtune.tune.journal import state_dir, write_atomic
from vhtune.tune.knob import Target, Value


@dataclass
class Change:
    knob: str
    target: Target
    current: Value
    proposed: Value
    command: str
    restart_required: bool = False
    reason: str = ""  # the finding or request behind it

    @property
    def is_noop(self) -> bool:
        return self.current == self.proposed


@dataclass
class Plan:
    id: str
    created: float
    changes: list[Change] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "changes": [asdict(c) for c in self.changes]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        changes = []
        for c in data["changes"]:
            c = dict(c)
            c["target"] = Target(**c["target"])
            changes.append(Change(**c))
        return cls(id=data["id"], created=data["created"], changes=changes)


def plan_id(changes: list[Change]) -> str:
    key = [(c.knob, c.target.kind, sorted(c.target.ident.items()), c.proposed) for c in changes]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def plans_dir(root: Path | None = None) -> Path:
    return (root or state_dir()) / "plans"


def save_plan(plan: Plan, root: Path | None = None) -> Path:
    path = plans_dir(root) / f"{plan.id}.json"
    write_atomic(path, json.dumps(plan.to_json(), indent=2, default=str))
    return path


def load_plan(pid: str | None, root: Path | None = None) -> Plan:
    d = plans_dir(root)
    if pid is None:
        candidates = sorted(d.glob("*.json"), key=lambda p: p.stat().st_mtime) if d.exists() else []
        if not candidates:
            raise TuneError("there is no saved plan", "make one with `vhtune tune plan`")
        path = candidates[-1]
    else:
        path = d / f"{pid}.json"
        if not path.exists():
            raise TuneError(f"no plan with id {pid}", "list plans with `vhtune tune plan --list`")
    try:
        return Plan.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TuneError(f"plan file {path} is damaged ({exc})") from None


def new_plan(changes: list[Change]) -> Plan:
    return Plan(id=plan_id(changes), created=time.time(), changes=changes)
