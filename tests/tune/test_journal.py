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


def test_second_apply_of_the_same_plan_is_rolled_back_too(restore_files: list[Path], state_root: Path) -> None:
    # Plan ids hash what they change: planning the same change again after a rollback gives the same id and the
    # same journal. Its second rollback must restore the value again, not count it as restored the first time.
    from tests.tune.conftest import snapshot_with
    from vhtune.tune.engine import Request, apply_plan, make_plan, verify_plan
    from vhtune.tune.knob import Target

    busy = Path("/proc/sys/net/core/busy_poll")
    restore_files.append(busy)
    before = int(busy.read_text())
    req = Request("sysctl", Target("sysctl", {"key": "net.core.busy_poll"}), before + 13)
    for _ in range(2):
        plan = make_plan([req], snapshot_with())
        apply_plan(plan, snapshot_with)
        assert all(r.ok for r in verify_plan(plan))
        rollback_plan(plan.id, state_root)
        assert int(busy.read_text()) == before


def test_planning_an_applied_change_again_keeps_the_applied_plan(restore_files: list[Path], state_root: Path) -> None:
    # The same change planned while it is applied has the same id: the plan on disk must keep the value from
    # before the apply, or verify would see current == proposed, call the change a no-op and check nothing.
    from tests.tune.conftest import snapshot_with
    from vhtune.tune.engine import Request, apply_plan, make_plan, verify_plan
    from vhtune.tune.knob import Target
    from vhtune.tune.plan import load_plan

    busy = Path("/proc/sys/net/core/busy_poll")
    restore_files.append(busy)
    before = int(busy.read_text())
    req = Request("sysctl", Target("sysctl", {"key": "net.core.busy_poll"}), before + 13)
    plan = make_plan([req], snapshot_with())
    apply_plan(plan, snapshot_with)
    again = make_plan([req], snapshot_with())
    assert again.id == plan.id and again.changes[0].current == before
    assert load_plan(plan.id).changes[0].current == before
    busy.write_text(f"{before}\n")  # drift
    assert [r.ok for r in verify_plan(load_plan(plan.id))] == [False]
    rollback_plan(plan.id, state_root)
    assert int(busy.read_text()) == before


def test_entries_after_a_torn_line_are_kept(state_root: Path) -> None:
    journal = Journal("abc", state_root)
    journal.append({"event": "saved", "seq": 0})
    with open(journal.path, "a") as f:
        f.write('{"event": "appl')  # power loss mid-write
    journal.append({"event": "restored", "seq": 0})
    journal.append({"event": "rollback-done"})
    assert [e["event"] for e in journal.entries()] == ["saved", "restored", "rollback-done"]


def test_new_journal_directory_entry_is_fsynced(state_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first append creates the file: its name lives in the directory, which must be fsync'd as well, or
    # power loss can drop the journal of a value that was already written.
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    journal = Journal("abc", state_root)
    journal.append({"event": "saved", "seq": 0})
    assert str(journal.path) in synced
    assert str(journal.path.parent) in synced


# Applies a three-change plan with the journal's file size limited (RLIMIT_FSIZE: EFBIG, as a full disk's
# ENOSPC) so that the journal stops taking lines in the middle of the "applied" line of the last change, after
# that change's value was written. apply must then roll back all three values although the journal takes nothing.
FULL_DISK_CHILD = r"""
import os, resource, sys, time
from vhtune.discover.model import Snapshot, ThreadInfo
from vhtune.errors import TuneError
from vhtune.tune import journal as jmod
from vhtune.tune.engine import Request, apply_plan, make_plan
from vhtune.tune.knob import Target

pid, tid, cpu, poll, read = (int(a) for a in sys.argv[1:6])
snap = Snapshot(taken_at=time.time(), hostname="t", kernel="k",
                threads=[ThreadInfo(pid=pid, tid=tid, comm="vhtune-q0", role="backend-worker")])
plan = make_plan([Request("sysctl", Target("sysctl", {"key": "net.core.busy_poll"}), poll),
                  Request("sysctl", Target("sysctl", {"key": "net.core.busy_read"}), read),
                  Request("thread-affinity", Target("thread", {"tid": tid}), str(cpu))], snap)
calls = 0
real_append = jmod.Journal.append
def append(self, entry):
    global calls
    calls += 1
    if calls == 6:  # the "applied" line of the third change: the disk fills up in the middle of it
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.path.stat().st_size + 5, resource.RLIM_INFINITY))
    real_append(self, entry)
jmod.Journal.append = append
try:
    apply_plan(plan, lambda: snap)
except TuneError as exc:
    print(exc.message, flush=True)
"""


def test_full_disk_mid_apply_still_rolls_back_every_value(
    worker: tuple[int, int], restore_files: list[Path], state_root: Path
) -> None:
    import subprocess
    import sys

    pid, tid = worker
    poll, read = Path("/proc/sys/net/core/busy_poll"), Path("/proc/sys/net/core/busy_read")
    restore_files.append(poll)
    restore_files.append(read)
    poll_before, read_before = int(poll.read_text()), int(read.read_text())
    aff_before = os.sched_getaffinity(tid)
    cpu = max(aff_before)
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, *map(str, (pid, tid, cpu, poll_before + 9, read_before + 9))],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cannot write the tuning journal" in proc.stdout
    assert int(poll.read_text()) == poll_before
    assert int(read.read_text()) == read_before
    assert os.sched_getaffinity(tid) == aff_before


def _apply_affinity(pid: int, tid: int, cpu: int) -> str:
    from tests.tune.conftest import backend_thread, snapshot_with
    from vhtune.tune.engine import Request, apply_plan, make_plan
    from vhtune.tune.knob import Target

    snap = snapshot_with(threads=[backend_thread(pid, tid)])
    plan = make_plan([Request("thread-affinity", Target("thread", {"tid": tid}), str(cpu))], snap)
    apply_plan(plan, lambda: snap)
    return plan.id


def test_rollback_after_the_thread_exited_completes(worker: tuple[int, int], state_root: Path) -> None:
    # The VM or back-end was restarted after apply: the thread's affinity went with it. Rollback must finish
    # (and let the plan be applied again), not fail on the vanished tid forever.
    pid, tid = worker
    plan_id = _apply_affinity(pid, tid, max(os.sched_getaffinity(tid)))
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    rollback_plan(plan_id, state_root)
    entries = Journal(plan_id, state_root).entries()
    assert entries[-1]["event"] == "rollback-done"
    assert entries[-2]["note"] == "target exited"


def test_rollback_does_not_touch_a_reused_tid(worker: tuple[int, int], state_root: Path) -> None:
    pid, tid = worker
    aff_before = os.sched_getaffinity(tid)
    cpu = max(aff_before)
    plan_id = _apply_affinity(pid, tid, cpu)
    # Pretend the value was saved for an earlier thread that had this tid (it started at another time, exited,
    # and the kernel handed its tid to the worker): restoring its old CPUs would move an unrelated thread.
    journal = Journal(plan_id, state_root)
    lines = [json.loads(line) for line in journal.path.read_text().splitlines()]
    assert lines[0]["event"] == "saved"
    lines[0]["identity"] = {"tid": lines[0]["identity"]["tid"] - 1}
    journal.path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    rollback_plan(plan_id, state_root)
    assert os.sched_getaffinity(tid) == {cpu}
    assert journal.entries()[-2]["note"] == "target exited"


# Applies a plan whose knob stops after its old value was journaled and before it writes (says "ready" and
# waits for a line on stdin): a second vhtune that rolls back meanwhile must not interleave with it.
BLOCKING_CHILD = r"""
import sys, time
import vhtune.tune.engine as engine
from vhtune.discover.model import Snapshot
from vhtune.tune.engine import Request, apply_plan, make_plan
from vhtune.tune.knob import Target

_make_knob = engine.make_knob
def _slow_knob(name, target):
    knob = _make_knob(name, target)
    real = knob.apply
    def apply(value):
        print("ready", flush=True)
        sys.stdin.readline()
        real(value)
    knob.apply = apply
    return knob
engine.make_knob = _slow_knob
snap = Snapshot(taken_at=time.time(), hostname="t", kernel="k")
plan = make_plan([Request("sysctl", Target("sysctl", {"key": "net.core.busy_poll"}), int(sys.argv[1]))], snap)
print(plan.id, flush=True)
apply_plan(plan, lambda: snap)
"""


def test_rollback_while_another_vhtune_applies_is_refused(restore_files: list[Path], state_root: Path) -> None:
    import subprocess
    import sys

    from vhtune.errors import TuneError

    busy = Path("/proc/sys/net/core/busy_poll")
    restore_files.append(busy)
    before = int(busy.read_text())
    child = subprocess.Popen(
        [sys.executable, "-c", BLOCKING_CHILD, str(before + 17)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        plan_id = child.stdout.readline().strip()
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(TuneError, match="another vhtune"):
            rollback_plan(plan_id, state_root)
        child.stdin.write("go\n")
        child.stdin.close()
        assert child.wait(30) == 0
    finally:
        child.kill()
        child.wait()
    assert int(busy.read_text()) == before + 17
    rollback_plan(plan_id, state_root)
    assert int(busy.read_text()) == before
