"""`vhtune tune` end to end through the CLI, with real discovery deciding what may be touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("require_root")


def vhtune(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vhtune", *args], capture_output=True, text=True, env=env, timeout=60)


def test_plan_apply_verify_rollback_on_discovered_vcpu_thread(paused_vm: tuple[int, int], tmp_path: Path) -> None:
    _, tid = paused_vm
    env = {**os.environ, "VHTUNE_STATE_DIR": str(tmp_path)}
    before = os.sched_getaffinity(tid)
    cpu = str(max(before))
    plan = vhtune("tune", "plan", "--set", "thread-affinity", f"tid={tid}", cpu, "--json", env=env)
    assert plan.returncode == 0, plan.stderr
    plan_id = json.loads(plan.stdout)["id"]
    assert os.sched_getaffinity(tid) == before  # plan is a dry run

    refused = vhtune("tune", "apply", env=env)
    assert refused.returncode == 2 and "plan id" in refused.stderr

    applied = vhtune("tune", "apply", plan_id, env=env)
    assert applied.returncode == 0, applied.stderr
    assert os.sched_getaffinity(tid) == {int(cpu)}
    assert vhtune("tune", "verify", plan_id, env=env).returncode == 0

    os.sched_setaffinity(tid, before)  # someone else changes it: verify must notice the drift
    if before != {int(cpu)}:
        assert vhtune("tune", "verify", plan_id, env=env).returncode == 1
    os.sched_setaffinity(tid, {int(cpu)})

    rolled = vhtune("tune", "rollback", plan_id, env=env)
    assert rolled.returncode == 0, rolled.stderr
    assert os.sched_getaffinity(tid) == before


def test_plan_table_shows_scheduling_as_chrt_does(paused_vm: tuple[int, int], tmp_path: Path) -> None:
    _, tid = paused_vm
    env = {**os.environ, "VHTUNE_STATE_DIR": str(tmp_path), "COLUMNS": "200"}
    plan = vhtune("tune", "plan", "--set", "thread-sched", f"tid={tid}", '{"policy":"fifo","priority":10}', env=env)
    assert plan.returncode == 0, plan.stderr
    nice = os.getpriority(os.PRIO_PROCESS, tid)
    assert f"SCHED_OTHER nice {nice}" in plan.stdout and "SCHED_FIFO 10" in plan.stdout, plan.stdout


def test_cli_refuses_thread_it_did_not_discover(tmp_path: Path) -> None:
    env = {**os.environ, "VHTUNE_STATE_DIR": str(tmp_path)}
    # This test process's own main thread is no VM or back-end thread.
    proc = vhtune("tune", "plan", "--set", "thread-affinity", f"tid={os.getpid()}", "0", env=env)
    assert proc.returncode == 6
    assert "refusing to touch it" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("knob", "target", "value"),
    [
        ("thread-affinity", "tid=abc", "0"),  # a name where a tid belongs
        ("backend-tunable", "pid=auto,key=burst", "32"),  # pid=auto without `tune auto --scenario`
        ("thread-sched", "tid={vcpu}", '{"policy": "fifo", "priority": "high"}'),
        ("qemu-option", "vm={vm}", '{"option": "queues"}'),
    ],
)
def test_cli_bad_values_are_one_sentence(
    knob: str, target: str, value: str, paused_vm: tuple[int, int], tmp_path: Path
) -> None:
    pid, tid = paused_vm
    env = {**os.environ, "VHTUNE_STATE_DIR": str(tmp_path)}
    proc = vhtune("tune", "plan", "--set", knob, target.format(vcpu=tid, vm=pid), value, env=env)
    assert proc.returncode != 0
    assert proc.stderr.startswith("vhtune: error: ") and "Traceback" not in proc.stderr, proc.stderr
