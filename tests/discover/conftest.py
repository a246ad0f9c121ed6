"""Real peers for discovery integration tests: a DPDK testpmd vhost-user back-end and a paused TCG QEMU with
a vhost-user netdev and a multiqueue tap, QEMU started inside a netns the fixture creates.

Names carry this area's prefix and the test process's pid so parallel runs do not collide; everything is
torn down in ``finally`` blocks, also when a test fails or the start-up itself fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
DPDK_RUN_DIR = Path("/var/run/dpdk")


@dataclass
class RealSetup:
    netns: str
    tap: str
    socket: str
    vm_name: str
    vm_uuid: str
    qemu_pid: int
    testpmd_pid: int


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End a process this fixture started (by its own pid only): "quit" on an interactive testpmd's stdin,
    then SIGTERM, then SIGKILL."""
    if proc.poll() is None and proc.stdin is not None:
        try:
            proc.stdin.write(b"quit\n")
            proc.stdin.close()
            proc.wait(timeout=STOP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired):
            pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)


def _wait_for(what: str, cond: Callable[[], bool], procs: dict[str, subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if cond():
            return
        for name, p in procs.items():
            if p.poll() is not None:
                tails = "\n".join(f"--- {log}:\n{log.read_text(errors='replace')[-2000:]}" for log in logs)
                pytest.fail(f"{name} exited with {p.returncode} while waiting for {what}\n{tails}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {START_TIMEOUT_S:g} s waiting for {what}")


def _tun_fds(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/net/tun"
        except OSError:
            continue
    return n


def _vhost_user_negotiated(log: Path) -> bool:
    # DPDK's vhost library logs each vhost-user message; SET_VRING_ENABLE comes last in QEMU's start-up.
    return "VHOST_USER_SET_VRING_ENABLE" in log.read_text(errors="replace")


def _testpmd(prefix: str, vdev: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    # --no-huge: no hugepages taken from the shared pool (its runtime dir is removed at teardown).
    # Two lcores: main on CPU 0, the forwarding lcore ("rte-worker-1") on CPU 1.
    return subprocess.Popen(
        [
            "dpdk-testpmd",
            "-l",
            "0,1",
            "--no-pci",
            "--no-huge",
            "-m",
            "256",
            f"--file-prefix={prefix}",
            "--vdev",
            vdev,
            "--",
            "-i",
            "--total-num-mbufs=2048",
        ],
        stdin=subprocess.PIPE,  # kept open: interactive testpmd exits on EOF
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@dataclass
class DpdkPair:
    socket: str
    backend_pid: int
    frontend_pid: int


@pytest.fixture(scope="module")
def real_dpdk_pair(require_root: None) -> Iterator[DpdkPair]:
    """testpmd's vhost PMD (back-end, listening) and testpmd's virtio-user PMD (front-end): no QEMU."""
    if shutil.which("dpdk-testpmd") is None:
        pytest.fail("dpdk-testpmd is missing: run `make setup` (dpdk-dev)")
    tag = f"discp{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/tmp"))
    sock = str(workdir / "pair.sock")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    files: list[IO[bytes]] = []
    try:
        b_log, f_log = workdir / "backend.log", workdir / "frontend.log"
        files.append(open(b_log, "wb"))  # noqa: SIM115 (closed in finally)
        procs["testpmd back-end"] = _testpmd(f"{tag}b", f"net_vhost1,iface={sock}", files[-1])
        _wait_for("the back-end socket", lambda: os.path.exists(sock), procs, [b_log])
        files.append(open(f_log, "wb"))  # noqa: SIM115 (closed in finally)
        procs["testpmd front-end"] = _testpmd(f"{tag}f", f"net_virtio_user0,path={sock}", files[-1])
        _wait_for("vhost-user negotiation", lambda: _vhost_user_negotiated(b_log), procs, [b_log, f_log])
        yield DpdkPair(sock, procs["testpmd back-end"].pid, procs["testpmd front-end"].pid)
    finally:
        for p in reversed(list(procs.values())):
            _stop(p)
        for f in files:
            f.close()
        for suffix in ("b", "f"):
            shutil.rmtree(DPDK_RUN_DIR / f"{tag}{suffix}", ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def real_setup(require_root: None) -> Iterator[RealSetup]:
    for tool in ("qemu-system-x86_64", "dpdk-testpmd", "ip"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run `make setup` (packaging/host-setup.sh installs it)")
    tag = f"disc{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/tmp"))
    sock = str(workdir / "vu.sock")
    setup = RealSetup(
        netns=tag,
        tap=f"dtap{os.getpid()}"[:15],
        socket=sock,
        vm_name=f"{tag}-vm",
        vm_uuid=f"5f0c2b8e-3d4a-4e6b-9c1d-{os.getpid():012d}",
        qemu_pid=0,
        testpmd_pid=0,
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    files: list[IO[bytes]] = []
    netns_added = False
    try:
        tp_log = workdir / "testpmd.log"
        files.append(open(tp_log, "wb"))  # noqa: SIM115 (closed in finally)
        testpmd = _testpmd(tag, f"net_vhost0,iface={sock}", files[-1])
        procs["dpdk-testpmd"] = testpmd
        setup.testpmd_pid = testpmd.pid
        _wait_for("the testpmd vhost-user socket", lambda: os.path.exists(sock), procs, [tp_log])

        subprocess.run(["ip", "netns", "add", tag], check=True, capture_output=True, timeout=10)
        netns_added = True
        q_log = workdir / "qemu.log"
        files.append(open(q_log, "wb"))  # noqa: SIM115 (closed in finally)
        # `ip netns exec` setns()'s and then execs QEMU: the Popen pid is QEMU's.
        qemu = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                tag,
                "qemu-system-x86_64",
                "-accel",
                "tcg",
                "-S",
                "-display",
                "none",
                "-nodefaults",
                "-name",
                f"{setup.vm_name},debug-threads=on",
                "-uuid",
                setup.vm_uuid,
                "-object",
                "memory-backend-memfd,id=mem,size=128M,share=on,prealloc=on",
                "-numa",
                "node,memdev=mem",
                "-m",
                "128M",
                "-chardev",
                f"socket,id=c0,path={sock}",
                "-netdev",
                "vhost-user,id=n0,chardev=c0",
                "-device",
                "virtio-net-pci,netdev=n0,romfile=,vectors=0",
                "-netdev",
                f"tap,id=t0,ifname={setup.tap},script=no,downscript=no,queues=2",
                "-device",
                "virtio-net-pci,netdev=t0,romfile=,mq=on",
            ],
            stdin=subprocess.DEVNULL,
            stdout=files[-1],
            stderr=subprocess.STDOUT,
        )
        procs["qemu"] = qemu
        setup.qemu_pid = qemu.pid
        _wait_for("QEMU's two tap queues", lambda: _tun_fds(qemu.pid) == 2, procs, [q_log, tp_log])
        _wait_for("vhost-user negotiation", lambda: _vhost_user_negotiated(tp_log), procs, [q_log, tp_log])
        yield setup
    finally:
        for p in reversed(list(procs.values())):
            _stop(p)
        if netns_added:
            subprocess.run(["ip", "netns", "del", tag], check=False, capture_output=True, timeout=10)
        for f in files:
            f.close()
        shutil.rmtree(DPDK_RUN_DIR / tag, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


# A process in an unnamed netns (unshare --net) holding two queues of a multiqueue tap it created there.
_TAP_HOLDER = r"""
import fcntl, os, struct, sys, time
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR, IFF_MULTI_QUEUE = 0x0002, 0x1000, 0x4000, 0x0100
fds = []
for _ in range(2):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    ifr = struct.pack("16sH", sys.argv[1].encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    fds.append(fd)
print("ready", flush=True)
time.sleep(float(sys.argv[2]))
"""


@dataclass
class UnnamedNetnsTap:
    tap: str
    pid: int
    netns_inode: int


@pytest.fixture
def tap_in_unnamed_netns(require_root: None) -> Iterator[UnnamedNetnsTap]:
    tap = f"dunt{os.getpid()}"[:15]
    proc = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c", _TAP_HOLDER, tap, "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the holder prints or exits
        if line.strip() != b"ready":
            proc.wait(timeout=STOP_TIMEOUT_S)
            pytest.fail(f"tap holder failed: {proc.stderr.read().decode() if proc.stderr else ''}")
        ino = os.stat(f"/proc/{proc.pid}/ns/net").st_ino
        yield UnnamedNetnsTap(tap, proc.pid, ino)
    finally:
        _stop(proc)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()


@dataclass
class VhtunePair:
    socket: str
    backend_pid: int
    frontend_pid: int


def _has_thread(pid: int, prefix: str) -> bool:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().startswith(prefix):
                    return True
        except OSError:
            continue
    return False


@pytest.fixture(scope="module")
def real_vhtune_backend(require_root: None) -> Iterator[VhtunePair]:
    """vhtune's own back-end (`vhtune backend --port sink`) serving testpmd's virtio-user front-end."""
    tag = f"discv{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/tmp"))
    sock = str(workdir / "vhtune.sock")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    files: list[IO[bytes]] = []
    try:
        b_log, f_log = workdir / "backend.log", workdir / "frontend.log"
        files.append(open(b_log, "wb"))  # noqa: SIM115 (closed in finally)
        procs["vhtune backend"] = subprocess.Popen(
            [sys.executable, "-m", "vhtune", "backend", "--socket", sock, "--port", "sink"],
            stdin=subprocess.DEVNULL,
            stdout=files[-1],
            stderr=subprocess.STDOUT,
        )
        _wait_for("the vhtune back-end socket", lambda: os.path.exists(sock), procs, [b_log])
        files.append(open(f_log, "wb"))  # noqa: SIM115 (closed in finally)
        procs["testpmd front-end"] = _testpmd(tag, f"net_virtio_user0,path={sock}", files[-1])
        be_pid = procs["vhtune backend"].pid
        _wait_for("a vhtune-q<n> ring thread", lambda: _has_thread(be_pid, "vhtune-q"), procs, [b_log, f_log])
        yield VhtunePair(sock, be_pid, procs["testpmd front-end"].pid)
    finally:
        for p in reversed(list(procs.values())):
            _stop(p)
        for f in files:
            f.close()
        shutil.rmtree(DPDK_RUN_DIR / tag, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
