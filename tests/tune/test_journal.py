"""The journal survives what kills vhtune: SIGKILL mid-apply is rolled back from the journal alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.tune.conftest import DIE_AFTER_APPLY, run_dying_child
from vhtune.tune.engine import rollback_plan
from vhtune.tune.journal import Journal

pytestmark = pytest.mark.usefixtures("require_root")

# Applies a two-change plan in a child process and SIGKILLs itself right after the second value was written,
# before the journal could record it as applied.
CHILD = (
    DIE_AFTER_APPLY
    + r"""
DIE_ON = "thread-affinity"
pid, tid, cpu, busy = (int(a) for a in sys.argv[1:5])
snap = Snapshot(taken_at=time.time(), hostname="t", kernel="k",
                threads=[ThreadInfo(pid=pid, tid=tid, comm="vhtune-q0", role="backend-worker")])
plan = make_plan([Request("sysctl", Target("sysctl", {"key": "net.core.busy_poll"}), busy),
                  Request("thread-affinity", Target("thread", {"tid": tid}), str(cpu))], snap)
print(plan.id, flush=True)
apply_plan(plan, lambda: snap)
"""
)


def test_sigkill_mid_apply_then_rollback(worker: tuple[int, int], restore_files: list[Path], state_root: Path) -> None:
    pid, tid = worker
    busy = Path("/proc/sys/net/core/busy_poll")
    restore_files.append(busy)
    busy_before = int(busy.read_text())
    aff_before = os.sched_getaffinity(tid)
    cpu = max(aff_before)
    plan_id = run_dying_child(CHILD, pid, tid, cpu, busy_before + 11)
    # Both values were changed; the journal saw "saved" for both and "applied" only for the first.
    assert int(busy.read_text()) == busy_before + 11
    assert os.sched_getaffinity(tid) == {cpu}
    events = [e["event"] for e in Journal(plan_id, state_root).entries()]
    assert events == ["saved", "applied", "saved"]
    rollback_plan(plan_id, state_root)
    assert int(busy.read_text()) == busy_before
    assert os.sched_getaffinity(tid) == aff_before
    assert Journal(plan_id, state_root).entries()[-1]["event"] == "rollback-done"


def test_values_reset_by_reboot_are_not_restored(restore_files: list[Path], state_root: Path) -> None:
    busy = Path("/proc/sys/net/core/busy_poll")
    restore_files.append(busy)
    journal = Journal("feedfacecafe", state_root)
    journal.append(
        {
            "event": "saved",
            "seq": 0,
            "knob": "sysctl",
            "target": {"kind": "sysctl", "ident": {"key": "net.core.busy_poll"}},
            "old": 77,
        }
    )
    # Pretend that entry was written during an earlier boot.
    lines = journal.path.read_text().splitlines()
    entry = json.loads(lines[0])
    entry["boot_id"] = "an-earlier-boot"
    journal.path.write_text(json.dumps(entry) + "\n")
    before = busy.read_text()
    rollback_plan("feedfacecafe", state_root)
    assert busy.read_text() == before  # a runtime sysctl was reset by the reboot: not overwritten with 77
    assert Journal("feedfacecafe", state_root).entries()[-2]["note"] == "reset by reboot"


def test_torn_last_line_is_ignored(state_root: Path) -> None:
    journal = Journal("abc", state_root)
    journal.append({"event": "saved", "seq": 0})
    with open(journal.path, "a") as f:
        f.write('{"event": "appl')
    assert [e["event"] for e in journal.entries()] == ["saved"]
