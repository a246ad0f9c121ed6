"""`vhtune record` end to end on the real kernel: signals, SIGKILL integrity, errors, target churn."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.record.conftest import RecordProcess, run_record
from vhtune.record import read_manifest, read_table

pytestmark = pytest.mark.root

# Runs 30 s at most: the main thread wakes every 10 ms; a line on stdin starts a thread named vhr-extra
# that runs ~1.5 s and ends (target churn while recording).
TARGET = """
import ctypes, sys, threading, time
libc = ctypes.CDLL(None)
def extra():
    libc.prctl(15, b"vhr-extra", 0, 0, 0)  # PR_SET_NAME: the thread's comm
    t = time.monotonic() + 1.5
    while time.monotonic() < t: time.sleep(0.001)
def on_stdin():
    if sys.stdin.readline():
        threading.Thread(target=extra).start()
threading.Thread(target=on_stdin, daemon=True).start()
end = time.monotonic() + 30
print("go", flush=True)
while time.monotonic() < end:
    time.sleep(0.01)
"""


@pytest.fixture
def target() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", TARGET], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_sigkill_mid_recording_leaves_a_readable_recording(tmp_path: Path, target: subprocess.Popen[str]) -> None:
    out = tmp_path / "rec"
    with RecordProcess(out, "-p", str(target.pid), "--interval", "0.2", "--flush-every", "2") as rec:
        rec.wait_flushes(4)
        rec.kill()
        rec.wait(timeout=10)
    m = read_manifest(out)
    df = read_table(out, "threads")
    assert m["complete"] is False and m["ended_at"] is None
    # The first flush holds no intervals (it follows attach); each later one holds flush_every intervals.
    assert len(df) >= (int(m["flushes"]) - 1) * 2
    main = df[df["tid"] == target.pid]
    assert set(df["tid"]) == {int(t) for t in os.listdir(f"/proc/{target.pid}/task")}  # -p: all its threads
    assert len(main) >= 1
    assert (main["wakeups"] > 0).all()  # it wakes every 10 ms: ≈ 20 per 0.2 s interval
    assert len(read_table(out, "lost")) == len(main)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_finish_cleanly(tmp_path: Path, target: subprocess.Popen[str], sig: int) -> None:
    out = tmp_path / "rec"
    with RecordProcess(out, "-p", str(target.pid), "--interval", "0.2", "--flush-every", "3", "--json") as rec:
        rec.wait_flushes(2)
        rec.send_signal(sig)
        stdout, stderr = rec.communicate(timeout=20)
    assert rec.returncode == 0, stderr
    summary = json.loads(stdout)
    m = read_manifest(out)
    assert m["complete"] is True and m["stop_reason"] == signal.Signals(sig).name
    assert summary["stop_reason"] == signal.Signals(sig).name
    df = read_table(out, "threads")
    assert (
        len(df[df["tid"] == target.pid]) == summary["intervals"]
    )  # every interval reached the disk, none lost at the end
    assert m["probes"]["families"]["sched"] == "attached"
    assert m["discovery"] is not None and "hostname" in m["discovery"]


def test_duration_json_summary_and_new_threads_are_picked_up_and_let_go(
    tmp_path: Path, target: subprocess.Popen[str]
) -> None:
    out = tmp_path / "rec"
    args = ["-p", str(target.pid), "--duration", "5", "--interval", "0.25", "--refresh", "0.3", "--json"]
    with RecordProcess(out, *args) as rec:
        rec.wait_flushes(1)  # attached and watching
        assert target.stdin is not None
        target.stdin.write("start\n")
        target.stdin.flush()
        stdout, stderr = rec.communicate(timeout=60)
    res = subprocess.CompletedProcess(rec.args, rec.returncode, stdout, stderr)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["stop_reason"] == "duration" and summary["lost_events"] == 0
    assert 0 < summary["start_to_attached_s"] < 10.0  # the < 3 s goal is measured by bench/record_bench.py
    m = read_manifest(out)
    added = [a for ch in m["changes"] for a in ch["added"]]
    removed = [r for ch in m["changes"] for r in ch["removed"]]
    assert any("vhr-extra" in a for a in added), m["changes"]
    extra_tid = next(int(a.split()[1]) for a in added if "vhr-extra" in a)
    assert f"thread {extra_tid}" in removed
    df = read_table(out, "threads")
    assert extra_tid in set(df["tid"]) and target.pid in set(df["tid"])
    assert df[df["tid"] == extra_tid]["wakeups"].sum() > 100
    assert set(df[df["tid"] == extra_tid]["comm"]) == {"vhr-extra"}


def test_unwritable_directory_is_one_clear_sentence(readonly_fs: Path) -> None:
    res = run_record(readonly_fs / "rec", "--duration", "1")
    assert res.returncode == 4
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("vhtune: error: cannot create the recording directory")
    assert "read-only" in res.stderr


def test_bad_interval_is_a_usage_error(tmp_path: Path) -> None:
    res = run_record(tmp_path / "r", "--interval", "0")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "--interval 0.0 is out of range" in res.stderr


def test_a_tap_that_does_not_exist_is_recorded_with_a_warning(tmp_path: Path) -> None:
    """`vhtune record --tap` with a typo: recorded (the VM may start later), and said in the summary (JSON and
    text) and the manifest instead of leaving rows of zeros unexplained."""
    out = tmp_path / "r"
    res = run_record(out, "--tap", "vhtnosuch0", "--interval", "0.2", "--duration", "0.5", "--json")
    assert res.returncode == 0, res.stderr
    said = "--tap vhtnosuch0: there is no interface vhtnosuch0 in netns root now"
    assert [w for w in json.loads(res.stdout)["warnings"] if w.startswith(said)], res.stdout
    assert [w for w in read_manifest(out)["warnings"] if w.startswith(said)]
    text = run_record(tmp_path / "t", "--tap", "vhtnosuch0", "--interval", "0.2", "--duration", "0.5")
    assert text.returncode == 0 and "warning: --tap vhtnosuch0: there is no interface" in text.stdout, text.stdout


def test_missing_pid_is_a_usage_error(tmp_path: Path) -> None:
    res = run_record(tmp_path / "r", "-p", "4194304")
    assert res.returncode == 2 and res.stderr.startswith("vhtune: error: no process 4194304")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_disk_full_mid_recording_stops_with_one_sentence_and_keeps_what_was_written(
    tiny_fs: Path, target: subprocess.Popen[str]
) -> None:
    out = tiny_fs / "rec"
    res = run_record(
        out, "-p", str(target.pid), "--interval", "0.1", "--flush-every", "1", "--duration", "60", timeout=90
    )
    assert res.returncode == 4, res.stderr
    assert "Traceback" not in res.stderr and "the disk is full" in res.stderr
    df = read_table(out, "threads")
    assert len(df) >= 1 and target.pid in set(df["tid"])
    assert read_manifest(out)["complete"] is False


def test_sigint_during_start_up_is_a_clean_stop(tmp_path: Path, target: subprocess.Popen[str]) -> None:
    out = tmp_path / "rec"
    with RecordProcess(out, "-p", str(target.pid), "--interval", "0.2", "--json") as rec:
        while not (out / "manifest.json").exists():  # the directory is made before discovery and the compile
            assert rec.poll() is None
            time.sleep(0.01)
        rec.send_signal(signal.SIGINT)  # while the probes still compile
        stdout, stderr = rec.communicate(timeout=60)
    assert rec.returncode == 0, stderr
    m = read_manifest(out)
    assert m["complete"] is True and m["stop_reason"] == "SIGINT"
    assert json.loads(stdout)["intervals"] == 1


def _compile_child(parent: int) -> int | None:
    """The pid of ``parent``'s running `python -m vhtune.probes.child`, if any."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            try:
                if b"vhtune.probes.child" in Path(f"/proc/{kid}/cmdline").read_bytes():
                    return int(kid)
            except OSError:
                continue
    return None


@pytest.mark.parametrize(
    ("sig", "child_sig"),
    [(signal.SIGTERM, signal.SIGTERM), (signal.SIGHUP, signal.SIGHUP), (signal.SIGTERM, signal.SIGKILL)],
)
def test_group_signal_during_the_compile_is_a_clean_stop(
    tmp_path: Path, target: subprocess.Popen[str], sig: int, child_sig: int
) -> None:
    # systemd's stop (KillMode=control-group) and a closed terminal signal every process of the unit / group,
    # the compile child included: the stop must still be clean, not "the probe compiler exited with code -15"
    # (SIGKILL: the child dies whatever it does, e.g. signalled before its interpreter set its handlers). The
    # agent is signalled first, as systemd does (main pid, then the rest of the cgroup) and as kill(2) to a
    # process group has it pending before the child can die of it; the child may then die before it even read
    # the request (a send to it fails with EPIPE).
    out = tmp_path / "rec"
    with RecordProcess(out, "-p", str(target.pid), "--interval", "0.2", "--json") as rec:
        deadline = time.monotonic() + 30
        while (child := _compile_child(rec.pid)) is None:
            assert rec.poll() is None and time.monotonic() < deadline, "no compile child seen"
            time.sleep(0.005)
        rec.send_signal(sig)
        os.kill(child, child_sig)
        _stdout, stderr = rec.communicate(timeout=60)
    assert rec.returncode == 0, stderr
    m = read_manifest(out)
    assert m["complete"] is True and m["stop_reason"] == signal.Signals(sig).name
    assert not Path(f"/proc/{child}").exists()  # the compile child is gone, not left running


# A thread named vhr-before when the recording starts renames itself vhr-after on a line on stdin.
RENAMER = """
import ctypes, sys, threading, time
libc = ctypes.CDLL(None)
def worker():
    libc.prctl(15, b"vhr-before", 0, 0, 0)  # PR_SET_NAME
    print("go", flush=True)
    sys.stdin.readline()
    libc.prctl(15, b"vhr-after", 0, 0, 0)
    print("renamed", flush=True)
    end = time.monotonic() + 30
    while time.monotonic() < end: time.sleep(0.002)
threading.Thread(target=worker).start()
"""


def test_a_renamed_thread_is_recorded_under_its_new_name_after_rediscovery(tmp_path: Path) -> None:
    """Rows carry the comm re-discovery saw last, and the run's summary names the thread by its latest comm."""
    proc = subprocess.Popen([sys.executable, "-c", RENAMER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "go"
        out = tmp_path / "rec"
        args = ["-p", str(proc.pid), "--duration", "4", "--interval", "0.25", "--refresh", "0.3", "--json"]
        with RecordProcess(out, *args) as rec:
            rec.wait_flushes(1)
            assert proc.stdin is not None
            proc.stdin.write("rename\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "renamed"
            stdout, stderr = rec.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert rec.returncode == 0, stderr
    df = read_table(out, "threads")
    mine = df[df["comm"].isin(["vhr-before", "vhr-after"])].sort_values("ts")
    assert mine["tid"].nunique() == 1 and set(mine["pid"]) == {proc.pid}
    tid = int(mine["tid"].iloc[0])
    comms = list(mine["comm"])
    assert comms[0] == "vhr-before" and comms[-1] == "vhr-after"
    assert comms == sorted(comms, key=lambda c: c == "vhr-after")  # once renamed, never the old name again
    summary = json.loads(stdout)
    (entry,) = [t for t in summary["threads"] if t["tid"] == tid]
    assert (entry["pid"], entry["comm"]) == (proc.pid, "vhr-after")
