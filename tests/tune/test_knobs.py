"""Each knob: plan → apply → verify → rollback restores the exact original value, on real objects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tune.conftest import backend_thread, snapshot_with
from vhtune.discover.model import TapInfo
from vhtune.errors import TuneError
from vhtune.lab.netns import Netns, tap
from vhtune.tune.engine import Request, apply_plan, make_plan, rollback_plan, verify_plan
from vhtune.tune.knob import Target, format_cpulist, parse_cpulist
from vhtune.tune.knobs import describe_value

pytestmark = pytest.mark.usefixtures("require_root")


def _roundtrip(req: Request, snap, read_now, expect_applied, state_root: Path) -> None:  # type: ignore[no-untyped-def]
    original = read_now()
    plan = make_plan([req], snap)
    applied = apply_plan(plan, lambda: snap)
    assert len(applied) == 1
    assert read_now() == expect_applied
    assert all(r.ok for r in verify_plan(plan))
    rollback_plan(plan.id)
    assert read_now() == original
    assert not all(r.ok for r in verify_plan(plan))


def test_thread_affinity(worker: tuple[int, int], state_root: Path) -> None:
    pid, tid = worker
    snap = snapshot_with(threads=[backend_thread(pid, tid)])
    original = os.sched_getaffinity(tid)
    target_cpu = max(original)
    _roundtrip(
        Request("thread-affinity", Target("thread", {"tid": tid}), str(target_cpu)),
        snap,
        lambda: os.sched_getaffinity(tid),
        {target_cpu},
        state_root,
    )
    assert os.sched_getaffinity(tid) == original


def test_thread_sched(worker: tuple[int, int], state_root: Path) -> None:
    pid, tid = worker
    snap = snapshot_with(threads=[backend_thread(pid, tid)])

    def read() -> tuple[int, int, int]:
        return os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority, os.getpriority(os.PRIO_PROCESS, tid)

    _roundtrip(
        Request("thread-sched", Target("thread", {"tid": tid}), {"policy": "fifo", "priority": 10}),
        snap,
        read,
        (os.SCHED_FIFO, 10, 0),
        state_root,
    )


def test_thread_sched_rollback_keeps_reset_on_fork(worker: tuple[int, int], state_root: Path) -> None:
    # SCHED_RESET_ON_FORK is a flag on the policy (sched_getscheduler returns it OR-ed in): a rollback must put
    # it back with the policy, nice and priority.
    pid, tid = worker
    os.sched_setscheduler(tid, os.SCHED_BATCH | os.SCHED_RESET_ON_FORK, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, tid, 5)
    snap = snapshot_with(threads=[backend_thread(pid, tid)])

    def read() -> tuple[int, int, int]:
        return os.sched_getscheduler(tid), os.sched_getparam(tid).sched_priority, os.getpriority(os.PRIO_PROCESS, tid)

    assert read() == (os.SCHED_BATCH | os.SCHED_RESET_ON_FORK, 0, 5)
    _roundtrip(
        Request("thread-sched", Target("thread", {"tid": tid}), {"policy": "fifo", "priority": 10}),
        snap,
        read,
        (os.SCHED_FIFO, 10, 0),  # the plan sets nice 0 with the policy
        state_root,
    )


def test_sysctl_busy_poll(restore_files: list[Path], state_root: Path) -> None:
    path = Path("/proc/sys/net/core/busy_poll")
    restore_files.append(path)
    before = int(path.read_text())
    _roundtrip(
        Request("sysctl", Target("sysctl", {"key": "net.core.busy_poll"}), before + 50),
        snapshot_with(),
        lambda: int(path.read_text()),
        before + 50,
        state_root,
    )


def test_halt_poll_ns(restore_files: list[Path], state_root: Path) -> None:
    path = Path("/sys/module/kvm/parameters/halt_poll_ns")
    current = int(path.read_text())
    req = Request("module-param", Target("module-param", {"key": "kvm.halt_poll_ns"}), 0 if current else 1000)
    if not path.stat().st_mode & 0o222:
        # This machine's kvm exposes its parameters read-only (0444): apply must say so in one sentence,
        # leave the value alone, and leave nothing half-applied in the journal.
        before = path.read_text()
        plan = make_plan([req], snapshot_with())
        with pytest.raises(TuneError, match="read-only on this kernel"):
            apply_plan(plan, snapshot_with)
        assert path.read_text() == before
        return
    restore_files.append(path)
    before_v = int(path.read_text())
    req = Request(req.knob, req.target, 0 if before_v else 200000)
    _roundtrip(req, snapshot_with(), lambda: int(path.read_text()), req.value, state_root)


def test_tap_txqueuelen_in_netns(state_root: Path) -> None:
    with Netns() as ns:
        tap(ns, "vhltune0")
        snap = snapshot_with(taps=[TapInfo(name="vhltune0", netns=ns.name)])

        def read() -> int:
            import json

            return int(json.loads(ns.ip("-j", "link", "show", "dev", "vhltune0").stdout)[0]["txqlen"])

        before = read()
        _roundtrip(
            Request("tap-txqueuelen", Target("tap", {"dev": "vhltune0", "netns": ns.name}), 16),
            snap,
            read,
            16,
            state_root,
        )
        assert read() == before


def test_refuses_undiscovered_thread(worker: tuple[int, int], state_root: Path) -> None:
    pid, tid = worker
    with pytest.raises(TuneError, match="not a VM or back-end thread"):
        make_plan([Request("thread-affinity", Target("thread", {"tid": tid}), "0")], snapshot_with())
    # Planned while discovered, but gone from discovery at apply time (tid reuse guard).
    plan = make_plan(
        [Request("thread-affinity", Target("thread", {"tid": tid}), "0")],
        snapshot_with(threads=[backend_thread(pid, tid)]),
    )
    with pytest.raises(TuneError, match="refusing"):
        apply_plan(plan, snapshot_with)


def test_refuses_unlisted_sysctl_and_unknown_knob(state_root: Path) -> None:
    with pytest.raises(TuneError, match="not one vhtune tunes"):
        make_plan([Request("sysctl", Target("sysctl", {"key": "kernel.panic"}), 1)], snapshot_with())
    with pytest.raises(TuneError, match="no knob named"):
        make_plan([Request("nope", Target("sysctl", {"key": "x"}), 1)], snapshot_with())


def test_failed_apply_rolls_back_earlier_changes(
    worker: tuple[int, int], restore_files: list[Path], state_root: Path
) -> None:
    pid, tid = worker
    path = Path("/proc/sys/net/core/busy_poll")
    restore_files.append(path)
    before = int(path.read_text())
    snap = snapshot_with(threads=[backend_thread(pid, tid)])
    plan = make_plan(
        [
            Request("sysctl", Target("sysctl", {"key": "net.core.busy_poll"}), before + 7),
            Request("thread-affinity", Target("thread", {"tid": tid}), "0"),
        ],
        snap,
    )
    # The thread dies between plan and apply: the second change fails, the first must be undone.
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    with pytest.raises(TuneError, match="rolled back"):
        apply_plan(plan, lambda: snap)
    assert int(path.read_text()) == before


def test_plan_shows_restart_required_changes_without_applying(state_root: Path) -> None:
    from vhtune.discover.model import VMInfo

    snap = snapshot_with()
    snap.vms.append(VMInfo(pid=1234, name="vm0"))
    plan = make_plan(
        [
            Request(
                "qemu-option", Target("vm", {"vm": "vm0", "current": 256}), {"option": "rx_queue_size", "value": 1024}
            )
        ],
        snap,
    )
    ch = plan.changes[0]
    assert ch.restart_required and "rx_queue_size=1024" in ch.command
    assert apply_plan(plan, lambda: snap) == []


def test_cpulist_roundtrip() -> None:
    assert parse_cpulist("0-2,5,7-8") == [0, 1, 2, 5, 7, 8]
    assert format_cpulist([8, 7, 5, 2, 1, 0]) == "0-2,5,7-8"
    with pytest.raises(TuneError):
        parse_cpulist("3-1")


@pytest.mark.parametrize("queue", ["tx-0", "rx-0"])
def test_tap_queue_masks_in_netns(queue: str, state_root: Path) -> None:
    from vhtune.tune.knobs.queue_mask import mask_to_cpus

    with Netns() as ns:
        tap(ns, "vhltuneq0", multi_queue=True)
        snap = snapshot_with(taps=[TapInfo(name="vhltuneq0", netns=ns.name)])
        leaf = "xps_cpus" if queue.startswith("tx") else "rps_cpus"

        def read() -> list[int]:
            out = ns.run(["cat", f"/sys/class/net/vhltuneq0/queues/{queue}/{leaf}"]).stdout
            return mask_to_cpus(out)

        want = [max(os.sched_getaffinity(0))]
        target = Target("tap", {"dev": "vhltuneq0", "netns": ns.name, "queue": queue})
        _roundtrip(Request("tap-queue-mask", target, want), snap, read, want, state_root)


def test_queue_mask_format() -> None:
    from vhtune.tune.knobs.queue_mask import cpus_to_mask, mask_to_cpus

    assert mask_to_cpus("00000003\n") == [0, 1] and mask_to_cpus("1,00000000") == [32]
    assert cpus_to_mask([0, 1]) == "3" and cpus_to_mask([]) == "0"


@pytest.mark.parametrize("value", [1.5, [-1], {"cpus": 1}])
def test_tap_queue_mask_refuses_a_bad_value_in_one_sentence(value: object, state_root: Path) -> None:
    with Netns() as ns:
        tap(ns, "vhltuneq1", multi_queue=True)
        snap = snapshot_with(taps=[TapInfo(name="vhltuneq1", netns=ns.name)])
        target = Target("tap", {"dev": "vhltuneq1", "netns": ns.name, "queue": "tx-0"})
        with pytest.raises(TuneError, match="CPU"):
            make_plan([Request("tap-queue-mask", target, value)], snap)


def test_values_as_tables_show_them() -> None:
    assert describe_value("thread-sched", {"policy": "fifo", "priority": 10}) == "SCHED_FIFO 10"
    assert describe_value("thread-sched", {"policy": "other", "priority": 0, "nice": -5}) == "SCHED_OTHER nice -5"
    assert describe_value("thread-sched", {"policy": "rr", "priority": 3, "reset_on_fork": True}) == (
        "SCHED_RR 3 reset-on-fork"
    )
    assert describe_value("thread-sched", "unknown") == "unknown"
    assert describe_value("thread-affinity", [0, 1, 2, 5]) == "0-2,5"
    assert describe_value("qemu-option", {"option": "queues", "value": 2}) == "option=queues, value=2"
    assert describe_value("guest-option", 4) == "4"  # a knob vhtune does not have: the value as is


def test_the_knob_reads_policies_by_the_names_discovery_gives_them() -> None:
    from vhtune.discover.model import SCHED_POLICY_NAMES
    from vhtune.tune.knobs.thread import _POLICIES

    assert {name: SCHED_POLICY_NAMES[number] for name, number in _POLICIES.items()} == {n: n for n in _POLICIES}


@pytest.mark.parametrize("policy", ["deadline", "ext"])
def test_a_policy_the_knob_cannot_set_is_refused_with_the_reason(policy: str) -> None:
    from vhtune.tune.knobs.thread import ThreadSchedKnob

    knob = ThreadSchedKnob(Target("thread", {"tid": os.getpid()}))
    with pytest.raises(TuneError, match="cannot set scheduling policy") as exc:
        knob.normalize({"policy": policy})
    assert "by hand" in str(exc.value.hint)
