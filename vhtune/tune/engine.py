"""plan → apply → verify → rollback over knobs, with the journal written before every change."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vhtune.discover.model import Snapshot
from vhtune.errors import TuneError
from vhtune.tune.journal import Journal, boot_id
from vhtune.tune.knob import Target, Value
from vhtune.tune.knobs import KNOBS, make_knob
from vhtune.tune.plan import Change, Plan, load_plan, new_plan, save_plan
from vhtune.tune.targets import check_target

SnapshotFn = Callable[[], Snapshot]


@dataclass(frozen=True)
class Request:
    knob: str
    target: Target
    value: Value
    reason: str = ""


def make_plan(requests: list[Request], snapshot: Snapshot, root: Path | None = None) -> Plan:
    changes: list[Change] = []
    for req in requests:
        check_target(req.target, snapshot)
        knob = make_knob(req.knob, req.target)
        proposed = knob.normalize(req.value) if not knob.restart_required else req.value
        current = knob.read()
        changes.append(
            Change(
                knob=req.knob,
                target=req.target,
                current=knob.normalize(current) if current is not None and not knob.restart_required else current,
                proposed=proposed,
                command=knob.command(proposed),
                restart_required=knob.restart_required,
                reason=req.reason,
            )
        )
    plan = new_plan(changes)
    if _current_cycle(Journal(plan.id, root).entries())[1]:
        # The same change planned again while it is applied (ids hash the change): the saved plan keeps the
        # values from before the apply, which verify compares against and the operator needs to see.
        return load_plan(plan.id, root)
    save_plan(plan, root)
    return plan


def apply_plan(plan: Plan, snapshot_fn: SnapshotFn, root: Path | None = None) -> list[Change]:
    """Apply every runtime change; on any failure roll back what this call applied and raise."""
    journal = Journal(plan.id, root)
    with journal.lock():
        if _current_cycle(journal.entries())[1]:
            raise TuneError(f"plan {plan.id} is already applied", "verify it, or roll it back first")
        snap = snapshot_fn()  # re-check targets now: tids may have been reused since planning
        applied: list[Change] = []
        for seq, ch in enumerate(plan.changes):
            if ch.restart_required or ch.is_noop:
                continue
            check_target(ch.target, snap)
            knob = make_knob(ch.knob, ch.target)
            try:
                old = knob.normalize(knob.read())
                pinned = knob.pinned()
                journal.append(
                    {
                        "event": "saved",
                        "seq": seq,
                        "knob": ch.knob,
                        "target": vars(pinned),
                        "old": old,
                        "identity": identity(pinned),
                    }
                )
                knob.apply(ch.proposed)
                if not knob.verify(ch.proposed):
                    raise TuneError(f"{ch.knob} on {ch.target.label()} reads back {knob.read()!r} after apply")
                journal.append({"event": "applied", "seq": seq, "new": ch.proposed})
            except TuneError as exc:
                try:
                    _rollback(journal)
                except TuneError as rb:
                    raise TuneError(
                        f"applying plan {plan.id} failed ({exc.message}), and so did its rollback: {rb.message}",
                        rb.hint,
                    ) from None
                raise TuneError(f"applying plan {plan.id} failed and was rolled back: {exc.message}") from None
            applied.append(ch)
    return applied


@dataclass
class VerifyRow:
    change: Change
    current: Value
    ok: bool


def verify_plan(plan: Plan) -> list[VerifyRow]:
    rows = []
    for ch in plan.changes:
        if ch.restart_required or ch.is_noop:
            continue
        knob = make_knob(ch.knob, ch.target)
        try:
            cur = knob.normalize(knob.read())
        except TuneError as exc:
            cur = f"unreadable: {exc.message}"
        rows.append(VerifyRow(ch, cur, cur == knob.normalize(ch.proposed)))
    return rows


def _current_cycle(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """The entries since the last completed rollback (a plan can be applied and rolled back again and again),
    and whether that apply is still in force."""
    done = [i for i, e in enumerate(entries) if e.get("event") == "rollback-done"]
    cycle = entries[done[-1] + 1 :] if done else entries
    return cycle, any(e.get("event") == "applied" for e in cycle)


def identity(target: Target) -> dict[str, int] | None:
    """What makes a thread or process the one a value was saved for: its start time (field 22 of
    /proc/ID/stat, in clock ticks since boot). A tid or pid reused later has a later start time. A pinned
    cgroup: its directory's inode (a cgroup removed and made again under the same name is a new one)."""
    pin = target.ident.get("cgroup")
    if isinstance(pin, dict):
        try:
            return {"cgroup_ino": os.stat(str(pin["dir"])).st_ino}
        except OSError:
            return {"cgroup_ino": -1}  # removed
    key = {"thread": "tid", "backend": "pid"}.get(target.kind)
    if key is None or key not in target.ident:
        return None
    try:
        stat = Path(f"/proc/{int(target.ident[key])}/stat").read_text()
        return {key: int(stat[stat.rindex(")") + 2 :].split()[19])}
    except (OSError, ValueError, IndexError):
        return {key: -1}  # gone


def rollback_plan(pid: str, root: Path | None = None) -> list[dict[str, Any]]:
    """Restore every saved old value, newest first. Works from the journal alone (after SIGKILL too)."""
    journal = Journal(pid, root)
    if not journal.entries():
        raise TuneError(f"plan {pid} has no journal: nothing was applied", "nothing to roll back")
    with journal.lock():
        return _rollback(journal)


def _rollback(journal: Journal) -> list[dict[str, Any]]:
    pid = journal.plan_id
    cycle, _ = _current_cycle(journal.entries())
    restored_seqs = {e["seq"] for e in cycle if e.get("event") == "restored"}
    saved = [e for e in cycle if e.get("event") == "saved" and e["seq"] not in restored_seqs]
    this_boot = boot_id()
    done: list[dict[str, Any]] = []
    errors: list[str] = []
    journal_errors: list[str] = []

    def record(entry: dict[str, Any]) -> None:
        # A journal that cannot be written (full disk) must not stop the other values from being restored.
        try:
            journal.append(entry)
        except TuneError as exc:
            journal_errors.append(exc.message)

    for e in reversed(saved):
        target = Target(**e["target"])
        knob = make_knob(e["knob"], target)
        if e.get("boot_id") != this_boot and not KNOBS[e["knob"]].survives_reboot:
            record({"event": "restored", "seq": e["seq"], "note": "reset by reboot"})
            continue
        if e.get("identity") is not None and identity(target) != e["identity"]:
            # The thread or process exited since (its value went with it), or its id now names another one.
            record({"event": "restored", "seq": e["seq"], "note": "target exited"})
            continue
        try:
            knob.rollback(e["old"])
        except TuneError as exc:
            errors.append(exc.message)
            continue
        record({"event": "restored", "seq": e["seq"], "old": e["old"]})
        done.append(e)
    if errors:
        raise TuneError(f"rollback of plan {pid} left {len(errors)} value(s) unrestored: {'; '.join(errors)}")
    if not journal_errors:
        record({"event": "rollback-done"})
    if journal_errors:
        raise TuneError(
            f"rollback of plan {pid} restored every value but could not record it: {journal_errors[0]}",
            f"free space, then run `vhtune tune rollback {pid}` again to record it",
        )
    return done
