"""`vhtune lab …` at the process edge: JSON out, one-sentence errors, and `lab clean` by naming only."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import Child
from vhtune.lab import hygiene, names, netns


def _vhtune(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vhtune", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_lab_list_json() -> None:
    cp = _vhtune("lab", "list", "--json")
    assert cp.returncode == 0, cp.stderr
    data = json.loads(cp.stdout)
    got = {s["name"] for s in data["scenarios"]}
    assert got == {
        "guest-ping",
        "guest-pktgen",
        "guest-iperf3",
        "guest-rx",
        "dpdk-sink",
        "dpdk-gen",
        "dpdk-echo",
        "tap-rx",
        "kvm-irqfd",
    }
    assert "cpu-hog" in data["faults"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("lab", "run", "warp"), "scenario 'warp' is unknown"),
        (("lab", "run", "dpdk-sink", "--fault", "gremlins"), "fault 'gremlins' is unknown"),
        (("lab", "run", "dpdk-sink", "--duration", "0"), "duration 0 s is out of range"),
        (("lab", "run", "dpdk-sink", "--backend", "dpdk", "--fault", "no-event-idx"), "needs the vhtune back-end"),
        (("lab", "run", "kvm-irqfd", "--count", "70000"), "count 70000 is out of range"),
    ],
)
def test_bad_input_is_one_sentence(args: tuple[str, ...], needle: str, require_root: None) -> None:
    cp = _vhtune(*args)
    assert cp.returncode == 2, cp
    assert needle in cp.stderr and "Traceback" not in cp.stderr


@pytest.mark.slow
def test_lab_run_json_summary(no_leftovers: None) -> None:
    cp = _vhtune("lab", "run", "dpdk-sink", "--duration", "1", "--json")
    assert cp.returncode == 0, cp.stderr
    s = json.loads(cp.stdout)
    assert s["scenario"] == "dpdk-sink" and s["ok"] and s["throughput"]["pps"] > 0
    assert s["elapsed_s"] < 30
    assert s["backend_stats"]["from_guest_packets"] > 0


def _dead_pid() -> int:
    for pid in range(4_000_000, 4_194_304):
        if not psutil.pid_exists(pid):
            return pid
    raise AssertionError("no free pid")


def test_clean_removes_dead_runs_only(no_leftovers: None) -> None:
    dead = _dead_pid()
    stale = netns.Netns(names.lab_name("n", pid=dead)).create()
    live = netns.Netns()  # carries this (live) process's pid
    live.create()
    stale_file = names.run_dir() / f"{names.lab_name('s', pid=dead)}.sock"
    stale_file.write_text("")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    try:
        # An orphan of the dead run: its command line names the dead run's socket (as QEMU's -chardev would).
        with (
            Child([*sleeper, f"{stale_file}"], stderr=subprocess.DEVNULL) as orphan,
            Child([*sleeper, f"/run/vhtune-lab/{names.lab_name('s')}.sock"], stderr=subprocess.DEVNULL) as live_proc,
        ):
            dry = hygiene.clean(dry_run=True)
            assert stale.name in dry.netns and stale.name in netns.list_netns()
            cp = _vhtune("lab", "clean", "--json", timeout=60)
            assert cp.returncode == 0, cp.stderr
            rep = json.loads(cp.stdout)
            assert stale.name in rep["netns"] and str(stale_file) in rep["files"]
            assert stale.name not in netns.list_netns() and not stale_file.exists()
            assert live.name in netns.list_netns() and live.name in rep["kept_live"]
            assert orphan.pid in rep["processes"] and orphan.wait(5) == -signal.SIGKILL
            assert live_proc.pid not in rep["processes"] and live_proc.poll() is None
    finally:
        live.destroy()
        stale.created = True
        stale.destroy()
        stale_file.unlink(missing_ok=True)
    assert os.getpid() == names.pid_of(live.name)


@pytest.mark.slow
def test_sigterm_mid_run_tears_everything_down(require_root: None) -> None:
    argv = [sys.executable, "-m", "vhtune", "lab", "run", "guest-ping", "--backend", "dpdk", "--duration", "20"]
    with Child(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as p:
        # Wait until the run has its netns, back-end and guest up, then stop it the way a service manager would.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            kids = psutil.Process(p.pid).children(recursive=True)
            if any("qemu" in c.name() for c in kids):
                break
            time.sleep(0.2)
        assert hygiene.snapshot(p.pid, own_only=True)["netns"], "the run never created its netns"
        p.send_signal(signal.SIGTERM)
        _out, err = p.communicate(timeout=30)
    assert p.returncode == 7 and "interrupted" in err and "Traceback" not in err
    left = hygiene.snapshot(p.pid, own_only=True)
    assert not any(left[k] for k in ("netns", "links", "run_files", "hugepages", "dpdk_runtime")), left
    assert not [q for q in hygiene.lab_processes() if any(f"{p.pid}x" in a for a in (q.info["cmdline"] or []))]


@pytest.mark.slow
def test_lab_image_json_reports_the_cached_image(require_root: None) -> None:
    cp = _vhtune("lab", "image", "--json", timeout=600)
    assert cp.returncode == 0, cp.stderr
    info = json.loads(cp.stdout)
    assert os.path.exists(info["kernel"]) and os.path.exists(info["initrd"])
    assert any(p.startswith("linux-image-") for p in info["packages"])


def test_clean_removes_dpdk_runtime_dirs_of_dead_runs(no_leftovers: None) -> None:
    stale = Path("/var/run/dpdk") / names.lab_name("d", pid=_dead_pid())
    live = Path("/var/run/dpdk") / names.lab_name("d")
    try:
        for d in (stale, live):
            d.mkdir(parents=True)
            (d / "config").write_text("")
        rep = hygiene.clean()
        assert str(stale) in rep.files and not stale.exists()
        assert live.name in rep.kept_live and live.is_dir()
    finally:
        for d in (stale, live):
            shutil.rmtree(d, ignore_errors=True)


def test_clean_sees_through_a_reused_pid(no_leftovers: None) -> None:
    """A dead run's pid now belongs to an unrelated process that started after the leftover was made: the
    leftover is removed (not kept as 'live' forever) and that process is left alone."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    with Child(sleeper, stderr=subprocess.DEVNULL) as unrelated:
        stale = names.run_dir() / f"{names.lab_name('s', pid=unrelated.pid)}.sock"
        try:
            stale.write_text("")
            made = psutil.Process(unrelated.pid).create_time() - 3600  # the dead run made it an hour earlier
            os.utime(stale, (made, made))
            rep = hygiene.clean()
            assert str(stale) in rep.files and not stale.exists()
            assert unrelated.pid not in rep.processes and unrelated.poll() is None
        finally:
            stale.unlink(missing_ok=True)
