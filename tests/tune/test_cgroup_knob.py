"""cgroup-cpuset on a real cpuset cgroup (v1 on this host), plus the cgroup v2 path on a fake cgroup tree.

The real tests create their own cgroup under the cpuset hierarchy's root, move a stand-in back-end (or a paused
QEMU) into it, and put everything back afterwards: tasks to the parent cgroup, then rmdir, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.tune.conftest import DIE_AFTER_APPLY, backend_thread, run_dying_child, snapshot_with
from vhtune.cpulist import parse_cpulist
from vhtune.discover.model import ROLE_VCPU, ThreadInfo
from vhtune.errors import TuneError
from vhtune.tune import targets
from vhtune.tune.engine import Request, apply_plan, make_plan, rollback_plan, verify_plan
from vhtune.tune.journal import Journal
from vhtune.tune.knob import Target
from vhtune.tune.knobs import cgroup as cg_mod
from vhtune.tune.knobs.cgroup import CgroupCpusetKnob


@dataclass
class CpusetDir:
    dir: Path
    parent: Path
    version: int

    @property
    def cpus(self) -> Path:
        return self.dir / "cpuset.cpus"

    def add(self, pid: int) -> None:
        # cgroup.procs moves every thread of the process (v1 and v2).
        (self.dir / "cgroup.procs").write_text(f"{pid}\n")


def _hierarchy() -> tuple[Path, int]:
    """Where the cpuset controller is mounted, read from the mount table like the knob does."""
    v2 = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        f = line.split()
        sep = f.index("-")
        if f[sep + 1] == "cgroup" and "cpuset" in f[sep + 3].split(",") and f[3] == "/":
            return Path(f[4]), 1
        if f[sep + 1] == "cgroup2" and f[3] == "/":
            v2 = Path(f[4])
    if v2 is not None and "cpuset" in (v2 / "cgroup.subtree_control").read_text().split():
        return v2, 2
    pytest.fail("no cpuset cgroup hierarchy to test on (no v1 cpuset mount, no cgroup2 with cpuset enabled)")


@pytest.fixture
def test_cgroup(require_root: None) -> Iterator[CpusetDir]:
    """A cpuset cgroup of our own with cpuset.cpus = all of its parent's CPUs; removed afterwards."""
    root, version = _hierarchy()
    d = root / f"vhtune-test-{os.getpid()}"
    d.mkdir()
    try:
        if version == 1:
            # A new v1 cpuset starts with empty cpus and mems, and refuses tasks (ENOSPC) until both are set.
            (d / "cpuset.mems").write_text((root / "cpuset.mems").read_text())
            (d / "cpuset.cpus").write_text((root / "cpuset.cpus").read_text())
        else:
            (d / "cpuset.cpus").write_text((root / "cpuset.cpus.effective").read_text())
        yield CpusetDir(d, root, version)
    finally:
        deadline = time.monotonic() + 5
        while True:
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                    (root / "cgroup.procs").write_text(f"{pid}\n")
            try:
                d.rmdir()
                break
            except OSError:  # EBUSY while an exiting task is still attached
                assert time.monotonic() < deadline, f"cannot remove {d}"
                time.sleep(0.05)


@pytest.fixture
def bystander() -> Iterator[int]:
    """A process vhtune did not discover."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _allowed(pid: int, tid: int) -> str:
    for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
    raise AssertionError("no Cpus_allowed_list")


@pytest.mark.parametrize("by", ["pid", "tid"])
def test_roundtrip_on_a_real_cpuset_cgroup(
    by: str, worker: tuple[int, int], test_cgroup: CpusetDir, state_root: Path
) -> None:
    pid, tid = worker
    test_cgroup.add(pid)
    cpus = sorted(int(c) for c in range(os.cpu_count() or 1))
    assert len(cpus) >= 2, "needs two CPUs to shrink the cpuset"
    original = test_cgroup.cpus.read_text()
    allowed_before = _allowed(pid, tid)
    want = cpus[-1]
    snap = snapshot_with(threads=[backend_thread(pid, tid)])
    target = Target("cgroup", {by: pid if by == "pid" else tid})

    plan = make_plan([Request("cgroup-cpuset", target, want)], snap)
    ch = plan.changes[0]
    assert ch.current == parse_cpulist(original) and ch.proposed == [want]
    assert ch.command == f"echo {want} > {test_cgroup.cpus}"
    assert test_cgroup.cpus.read_text() == original  # plan is a dry run

    assert len(apply_plan(plan, lambda: snap)) == 1
    assert test_cgroup.cpus.read_text() == f"{want}\n"
    # The kernel re-masked the cgroup's tasks: both threads of the worker now run on that CPU only.
    assert _allowed(pid, tid) == _allowed(pid, pid) == str(want)
    assert CgroupCpusetKnob(target).effective() == [want]
    assert all(r.ok for r in verify_plan(plan))

    rollback_plan(plan.id)
    assert test_cgroup.cpus.read_text() == original
    assert _allowed(pid, tid) == allowed_before
    assert not all(r.ok for r in verify_plan(plan))


# Applies the cgroup change in a child process and SIGKILLs it right after the value was written, before the
# journal could record it as applied.
CHILD = (
    DIE_AFTER_APPLY
    + r"""
DIE_ON = "cgroup-cpuset"
pid, tid, cpu = (int(a) for a in sys.argv[1:4])
snap = Snapshot(taken_at=time.time(), hostname="t", kernel="k",
                threads=[ThreadInfo(pid=pid, tid=tid, comm="vhtune-q0", role="backend-worker")])
plan = make_plan([Request("cgroup-cpuset", Target("cgroup", {"pid": pid}), cpu)], snap)
print(plan.id, flush=True)
apply_plan(plan, lambda: snap)
"""
)


def test_sigkill_mid_apply_then_rollback(worker: tuple[int, int], test_cgroup: CpusetDir, state_root: Path) -> None:
    pid, tid = worker
    test_cgroup.add(pid)
    original = test_cgroup.cpus.read_text()
    allowed_before = _allowed(pid, tid)
    cpu = max(parse_cpulist(original))
    plan_id = run_dying_child(CHILD, pid, tid, cpu)
    assert test_cgroup.cpus.read_text() == f"{cpu}\n"
    assert [e["event"] for e in Journal(plan_id, state_root).entries()] == ["saved"]
    rollback_plan(plan_id, state_root)
    assert test_cgroup.cpus.read_text() == original
    assert _allowed(pid, tid) == allowed_before
    assert Journal(plan_id, state_root).entries()[-1]["event"] == "rollback-done"


@pytest.fixture
def second_cgroup(test_cgroup: CpusetDir) -> Iterator[CpusetDir]:
    """A sibling of test_cgroup, made and removed the same way."""
    d = test_cgroup.parent / f"{test_cgroup.dir.name}-b"
    d.mkdir()
    try:
        for f in ("cpuset.mems", "cpuset.cpus") if test_cgroup.version == 1 else ("cpuset.cpus",):
            (d / f).write_text((test_cgroup.dir / f).read_text())
        yield CpusetDir(d, test_cgroup.parent, test_cgroup.version)
    finally:
        if d.exists():
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    (test_cgroup.parent / "cgroup.procs").write_text(f"{pid}\n")
            d.rmdir()


def test_rollback_restores_the_cgroup_it_changed_not_the_tasks_new_one(
    worker: tuple[int, int], test_cgroup: CpusetDir, second_cgroup: CpusetDir, state_root: Path
) -> None:
    # The value lives in the cgroup, not in the task: libvirt moving a VM, or the pid being reused by a process
    # in another cgroup, must not send the old CPU list to wherever that pid is now.
    pid, tid = worker
    test_cgroup.add(pid)
    original, other = test_cgroup.cpus.read_text(), second_cgroup.cpus.read_text()
    cpu = max(parse_cpulist(original))
    snap = snapshot_with(threads=[backend_thread(pid, tid)])
    plan = make_plan([Request("cgroup-cpuset", Target("cgroup", {"pid": pid}), cpu)], snap)
    apply_plan(plan, lambda: snap)
    assert test_cgroup.cpus.read_text() == f"{cpu}\n"
    second_cgroup.add(pid)
    rollback_plan(plan.id)
    assert test_cgroup.cpus.read_text() == original
    assert second_cgroup.cpus.read_text() == other


def test_rollback_after_the_cgroup_was_removed_completes(
    worker: tuple[int, int], test_cgroup: CpusetDir, second_cgroup: CpusetDir, state_root: Path
) -> None:
    # A VM that stopped takes its cgroup with it (libvirt removes the scope): nothing is left to restore.
    pid, tid = worker
    second_cgroup.add(pid)
    cpu = max(parse_cpulist(second_cgroup.cpus.read_text()))
    snap = snapshot_with(threads=[backend_thread(pid, tid)])
    plan = make_plan([Request("cgroup-cpuset", Target("cgroup", {"pid": pid}), cpu)], snap)
    apply_plan(plan, lambda: snap)
    test_cgroup.add(pid)
    second_cgroup.dir.rmdir()
    rollback_plan(plan.id)
    entries = Journal(plan.id, state_root).entries()
    assert [e["event"] for e in entries][-2:] == ["restored", "rollback-done"]
    assert entries[-2]["note"] == "target exited"


def test_refuses_the_root_cgroup(worker: tuple[int, int], test_cgroup: CpusetDir, state_root: Path) -> None:
    pid, tid = worker
    (test_cgroup.parent / "cgroup.procs").write_text(f"{pid}\n")  # the hierarchy's root cgroup
    with pytest.raises(TuneError, match="root cpuset cgroup"):
        make_plan(
            [Request("cgroup-cpuset", Target("cgroup", {"pid": pid}), 0)],
            snapshot_with(threads=[backend_thread(pid, tid)]),
        )


def test_refuses_a_cgroup_shared_with_an_undiscovered_process(
    worker: tuple[int, int], bystander: int, test_cgroup: CpusetDir, state_root: Path
) -> None:
    pid, tid = worker
    test_cgroup.add(pid)
    original = test_cgroup.cpus.read_text()
    snap = snapshot_with(threads=[backend_thread(pid, tid)])
    req = Request("cgroup-cpuset", Target("cgroup", {"pid": pid}), max(parse_cpulist(original)))
    plan = make_plan([req], snap)  # alone in its cgroup: fine
    test_cgroup.add(bystander)
    with pytest.raises(TuneError, match=rf"also holds processes vhtune did not discover \({bystander} \(sleep\)\)"):
        make_plan([req], snap)
    # Planned while alone, joined by an unrelated process before apply: refused at apply time, nothing written.
    with pytest.raises(TuneError, match="would move them too"):
        apply_plan(plan, lambda: snap)
    assert test_cgroup.cpus.read_text() == original


def test_refuses_an_undiscovered_pid(worker: tuple[int, int], test_cgroup: CpusetDir, state_root: Path) -> None:
    pid, tid = worker
    test_cgroup.add(pid)
    with pytest.raises(TuneError, match="not a VM or back-end that vhtune discovered; refusing"):
        make_plan([Request("cgroup-cpuset", Target("cgroup", {"pid": pid}), 0)], snapshot_with())
    with pytest.raises(TuneError, match="refusing to touch it"):
        make_plan([Request("cgroup-cpuset", Target("cgroup", {"tid": tid}), 0)], snapshot_with())


def test_kernel_refusals_are_one_sentence(worker: tuple[int, int], test_cgroup: CpusetDir, state_root: Path) -> None:
    pid, _ = worker
    test_cgroup.add(pid)
    original = test_cgroup.cpus.read_text()
    knob = CgroupCpusetKnob(Target("cgroup", {"pid": pid}))
    # More CPUs than the parent has: refused before the kernel would (v1: EACCES; v2: silently not granted).
    with pytest.raises(TuneError, match=r"outside .*cpuset\.cpus"):
        knob.apply([0, (os.cpu_count() or 1) + 7])
    if test_cgroup.version == 1:
        # v1 cannot leave attached tasks without a CPU: the kernel answers ENOSPC (measured here).
        with pytest.raises(TuneError, match="empty CPU list while the cgroup holds tasks"):
            knob.apply([])
    assert test_cgroup.cpus.read_text() == original


def vhtune(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vhtune", *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_plan_apply_verify_rollback_on_a_paused_vm(
    paused_vm: tuple[int, int], test_cgroup: CpusetDir, tmp_path: Path
) -> None:
    pid, vcpu = paused_vm
    test_cgroup.add(pid)
    env = {**os.environ, "VHTUNE_STATE_DIR": str(tmp_path)}
    original = test_cgroup.cpus.read_text()
    cpu = str(max(parse_cpulist(original)))
    plan = vhtune("tune", "plan", "--set", "cgroup-cpuset", f"pid={pid}", cpu, "--json", env=env)
    assert plan.returncode == 0, plan.stderr
    plan_id = json.loads(plan.stdout)["id"]
    assert test_cgroup.cpus.read_text() == original

    applied = vhtune("tune", "apply", plan_id, env=env)
    assert applied.returncode == 0, applied.stderr
    assert test_cgroup.cpus.read_text() == f"{cpu}\n" and _allowed(pid, vcpu) == cpu
    assert vhtune("tune", "verify", plan_id, env=env).returncode == 0

    test_cgroup.cpus.write_text(original)  # someone else changes it back: verify notices the drift
    assert vhtune("tune", "verify", plan_id, env=env).returncode == 1
    test_cgroup.cpus.write_text(cpu)

    rolled = vhtune("tune", "rollback", plan_id, env=env)
    assert rolled.returncode == 0, rolled.stderr
    assert test_cgroup.cpus.read_text() == original


# --- cgroup v2 (and v1 mount details) on a fake tree: this host has no cgroup v2 cpuset ---


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake /proc (mountinfo, cgroup and status files) and a cgroup2 tree rooted at tmp/cg.

    Task 4243 (thread of process 4242) is in /machine.slice/vm0/vcpu0, a cgroup with cpuset enabled from the
    root down, whose cpuset.cpus is empty (v2: inherit the parent's CPUs).
    """
    proc, cg = tmp_path / "proc", tmp_path / "cg sys"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        "25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw\n"
        f"32 25 0:29 / {str(cg).replace(' ', chr(92) + '040')} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
        "33 25 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
    )
    _task_files(proc, 4242, 4243, "0::/machine.slice/vm0/vcpu0\n", comm="qemu-system-x86")
    files = {
        "cgroup.controllers": "cpuset cpu io memory pids",
        "cgroup.subtree_control": "cpuset cpu memory",
        "cpuset.cpus.effective": "0-3",
        "machine.slice/cgroup.subtree_control": "cpuset cpu",
        "machine.slice/cpuset.cpus": "",
        "machine.slice/cpuset.cpus.effective": "0-3",
        "machine.slice/vm0/cgroup.subtree_control": "cpuset",
        "machine.slice/vm0/cpuset.cpus": "",
        "machine.slice/vm0/cpuset.cpus.effective": "0-3",
        "machine.slice/vm0/vcpu0/cpuset.cpus": "\n",
        "machine.slice/vm0/vcpu0/cpuset.cpus.effective": "0-3\n",
        "machine.slice/vm0/vcpu0/cgroup.threads": "4243\n",
    }
    for rel, text in files.items():
        (cg / rel).parent.mkdir(parents=True, exist_ok=True)
        (cg / rel).write_text(text)
    monkeypatch.setattr(cg_mod, "PROC_ROOT", proc)
    return cg


def _task_files(proc: Path, pid: int, tid: int, cgroup: str, comm: str) -> None:
    (proc / str(pid) / "task" / str(tid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "task" / str(tid) / "cgroup").write_text(cgroup)
    (proc / str(pid) / "comm").write_text(comm + "\n")
    for t in {pid, tid}:
        (proc / str(t)).mkdir(exist_ok=True)
        (proc / str(t) / "status").write_text(f"Name:\t{comm}\nTgid:\t{pid}\nPid:\t{t}\n")


def test_v2_read_apply_command_rollback(fake: Path) -> None:
    vcpu = fake / "machine.slice/vm0/vcpu0"
    knob = CgroupCpusetKnob(Target("cgroup", {"tid": 4243}))
    cg = knob.cgroup()
    assert (cg.version, cg.path, cg.dir) == (2, "/machine.slice/vm0/vcpu0", vcpu)
    assert knob.read() == [] and knob.effective() == [0, 1, 2, 3]
    assert knob.command("2-3") == f"echo 2-3 > '{vcpu}/cpuset.cpus'"
    knob.apply("3,2")
    assert (vcpu / "cpuset.cpus").read_text() == "2-3\n" and knob.verify([2, 3])
    knob.rollback([])  # back to empty: "inherit the parent's CPUs"
    assert (vcpu / "cpuset.cpus").read_text() == "\n"
    assert knob.command([]) == f"echo \"\" > '{vcpu}/cpuset.cpus'"


def test_v2_refuses_cpus_outside_the_parents_effective(fake: Path) -> None:
    (fake / "machine.slice/vm0/cpuset.cpus.effective").write_text("0-1\n")
    knob = CgroupCpusetKnob(Target("cgroup", {"pid": 4242, "tid": 4243}))
    with pytest.raises(TuneError, match=r"CPUs 2 are outside .*vm0/cpuset.cpus.effective \(0-1\)"):
        knob.apply("1-2")
    assert (fake / "machine.slice/vm0/vcpu0/cpuset.cpus").read_text() == "\n"


def test_v2_cpuset_not_enabled_in_the_parent(fake: Path) -> None:
    (fake / "machine.slice/vm0/vcpu0/cpuset.cpus").unlink()  # what the kernel shows without +cpuset in the parent
    (fake / "machine.slice/vm0/cgroup.subtree_control").write_text("cpu\n")
    with pytest.raises(TuneError) as exc:
        CgroupCpusetKnob(Target("cgroup", {"tid": 4243})).read()
    assert "not enabled for cgroup /machine.slice/vm0/vcpu0" in exc.value.message
    assert "cgroup.subtree_control lacks cpuset" in exc.value.message
    assert exc.value.hint and "echo +cpuset > " in exc.value.hint
    (fake / "cgroup.controllers").write_text("cpu io memory pids\n")
    with pytest.raises(TuneError, match="not available in the cgroup v2 hierarchy"):
        CgroupCpusetKnob(Target("cgroup", {"tid": 4243})).read()


def test_v2_root_cgroup_and_shared_cgroup(fake: Path) -> None:
    proc = cg_mod.PROC_ROOT
    _task_files(proc, 4300, 4300, "0::/\n", comm="qemu-system-x86")
    with pytest.raises(TuneError, match="root cpuset cgroup"):
        CgroupCpusetKnob(Target("cgroup", {"pid": 4300})).read()

    snap = snapshot_with(threads=[ThreadInfo(pid=4242, tid=4243, comm="CPU 0/KVM", role=ROLE_VCPU)])
    target = Target("cgroup", {"tid": 4243})
    targets.check_target(target, snap)  # only the VM's own thread lives there
    _task_files(proc, 999, 999, "0::/machine.slice/vm0/vcpu0\n", comm="sshd")
    (fake / "machine.slice/vm0/vcpu0/cgroup.threads").write_text("4243\n999\n31337\n")  # 31337: exited
    with pytest.raises(TuneError, match=r"also holds processes vhtune did not discover \(999 \(sshd\)\)"):
        targets.check_target(target, snap)


def test_v1_noprefix_and_a_container_mount_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc, mnt = tmp_path / "proc", tmp_path / "cpuset"
    (proc / "self").mkdir(parents=True)
    # Mounted with noprefix (files are "cpus", "effective_cpus"), showing only the /kubepods subtree.
    (proc / "self" / "mountinfo").write_text(
        f"40 31 0:34 /kubepods {mnt} rw,relatime - cgroup cgroup rw,cpuset,noprefix\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
    )
    _task_files(proc, 77, 77, "4:cpuset:/kubepods/pod1/be\n0::/\n", comm="dpdk-testpmd")
    (mnt / "pod1/be").mkdir(parents=True)
    (mnt / "pod1/cpus").write_text("0-3\n")
    (mnt / "pod1/be/cpus").write_text("0-3\n")
    (mnt / "pod1/be/effective_cpus").write_text("0-3\n")
    monkeypatch.setattr(cg_mod, "PROC_ROOT", proc)
    knob = CgroupCpusetKnob(Target("cgroup", {"pid": 77}))
    cg = knob.cgroup()
    assert (cg.version, cg.dir, cg.cpus_file.name, cg.threads_file.name) == (1, mnt / "pod1/be", "cpus", "tasks")
    knob.apply(1)
    assert (mnt / "pod1/be/cpus").read_text() == "1\n" and knob.read() == [1]
    with pytest.raises(TuneError, match="CPUs 4 are outside"):
        knob.apply("3-4")
