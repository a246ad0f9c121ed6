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


def paused_qemu_argv(name: str, memory: str, *more: str) -> list[str]:
    """A TCG QEMU that never runs its guest (-S), no display and no default devices, its vCPU threads named
    (``CPU 0/TCG``) for discovery to find."""
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-S",
        "-display",
        "none",
        "-nodefaults",
        "-name",
        f"{name},debug-threads=on",
        "-m",
        memory,
        *more,
    ]


def start_paused_qemu(name: str, memory: str) -> subprocess.Popen[bytes]:
    """A paused_qemu_argv QEMU without monitor or serial, its output discarded; the caller kills it."""
    argv = paused_qemu_argv(name, memory, "-monitor", "none", "-serial", "none")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def vcpu0_tid(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """The tid of QEMU's ``CPU 0/<accel>`` thread, once it has one; fails when QEMU exits or time runs out."""
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            try:
                if (task / "comm").read_text().startswith("CPU 0/"):
                    return int(task.name)
            except OSError:
                continue  # the thread exited between the listing and the read
        time.sleep(0.05)
    raise AssertionError(f"QEMU {proc.pid} has no vCPU thread (exit status {proc.poll()})")


class _Peers:
    """The processes a fixture starts, each logging to its own file in one temporary directory named after ``tag``.
    ``close()`` stops them (the last started first, by their own pids), closes the logs and removes the directory
    and the runtime directories of the testpmd file prefixes used."""

    def __init__(self, tag: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/tmp"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[Path] = []
        self._files: list[IO[bytes]] = []
        self._dpdk_prefixes: list[str] = []

    def start(self, name: str, argv: list[str], log: str, stdin: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        self._logs.append(self.workdir / log)
        self._files.append(open(self._logs[-1], "wb"))  # noqa: SIM115 (closed in close())
        self.procs[name] = subprocess.Popen(argv, stdin=stdin, stdout=self._files[-1], stderr=subprocess.STDOUT)
        return self.procs[name]

    def testpmd(self, name: str, prefix: str, vdev: str, log: str) -> subprocess.Popen[bytes]:
        """Interactive dpdk-testpmd with ``vdev``; its stdin is kept open (it exits on EOF)."""
        # --no-huge: no hugepages taken from the shared pool (its runtime dir is removed at close()).
        # Two lcores: main on CPU 0, the forwarding lcore ("rte-worker-1") on CPU 1.
        self._dpdk_prefixes.append(prefix)
        argv = ["dpdk-testpmd", "-l", "0,1", "--no-pci", "--no-huge", "-m", "256", f"--file-prefix={prefix}"]
        return self.start(name, [*argv, "--vdev", vdev, "--", "-i", "--total-num-mbufs=2048"], log, subprocess.PIPE)

    def wait_for(self, what: str, cond: Callable[[], bool]) -> None:
        """Poll ``cond`` until it holds; fail at once, with the tails of the logs, if a process exited."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if cond():
                return
            for name, p in self.procs.items():
                if p.poll() is not None:
                    tails = "\n".join(f"--- {log}:\n{log.read_text(errors='replace')[-2000:]}" for log in self._logs)
                    pytest.fail(f"{name} exited with {p.returncode} while waiting for {what}\n{tails}")
            time.sleep(0.05)
        pytest.fail(f"timed out after {START_TIMEOUT_S:g} s waiting for {what}")

    def close(self) -> None:
        for p in reversed(list(self.procs.values())):
            _stop(p)
        for f in self._files:
            f.close()
        for prefix in self._dpdk_prefixes:
            shutil.rmtree(DPDK_RUN_DIR / prefix, ignore_errors=True)
        shutil.rmtree(self.workdir, ignore_errors=True)


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
    peers = _Peers(tag)
    sock = str(peers.workdir / "pair.sock")
    try:
        be = peers.testpmd("testpmd back-end", f"{tag}b", f"net_vhost1,iface={sock}", "backend.log")
        peers.wait_for("the back-end socket", lambda: os.path.exists(sock))
        fe = peers.testpmd("testpmd front-end", f"{tag}f", f"net_virtio_user0,path={sock}", "frontend.log")
        peers.wait_for("vhost-user negotiation", lambda: _vhost_user_negotiated(peers.workdir / "backend.log"))
        yield DpdkPair(sock, be.pid, fe.pid)
    finally:
        peers.close()


@pytest.fixture(scope="module")
def real_setup(require_root: None) -> Iterator[RealSetup]:
    for tool in ("qemu-system-x86_64", "dpdk-testpmd", "ip"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run `make setup` (packaging/host-setup.sh installs it)")
    tag = f"disc{os.getpid()}"
    peers = _Peers(tag)
    sock = str(peers.workdir / "vu.sock")
    setup = RealSetup(
        netns=tag,
        tap=f"dtap{os.getpid()}"[:15],
        socket=sock,
        vm_name=f"{tag}-vm",
        vm_uuid=f"5f0c2b8e-3d4a-4e6b-9c1d-{os.getpid():012d}",
        qemu_pid=0,
        testpmd_pid=0,
    )
    netns_added = False
    try:
        setup.testpmd_pid = peers.testpmd("dpdk-testpmd", tag, f"net_vhost0,iface={sock}", "testpmd.log").pid
        peers.wait_for("the testpmd vhost-user socket", lambda: os.path.exists(sock))

        subprocess.run(["ip", "netns", "add", tag], check=True, capture_output=True, timeout=10)
        netns_added = True
        # `ip netns exec` setns()'s and then execs QEMU: the Popen pid is QEMU's.
        devices = [
            "-uuid",
            setup.vm_uuid,
            "-object",
            "memory-backend-memfd,id=mem,size=128M,share=on,prealloc=on",
            "-numa",
            "node,memdev=mem",
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
        ]
        argv = ["ip", "netns", "exec", tag, *paused_qemu_argv(setup.vm_name, "128M", *devices)]
        qemu = peers.start("qemu", argv, "qemu.log")
        setup.qemu_pid = qemu.pid
        peers.wait_for("QEMU's two tap queues", lambda: _tun_fds(qemu.pid) == 2)
        peers.wait_for("vhost-user negotiation", lambda: _vhost_user_negotiated(peers.workdir / "testpmd.log"))
        yield setup
    finally:
        peers.close()
        if netns_added:
            subprocess.run(["ip", "netns", "del", tag], check=False, capture_output=True, timeout=10)


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
    peers = _Peers(tag)
    sock = str(peers.workdir / "vhtune.sock")
    try:
        argv = [sys.executable, "-m", "vhtune", "backend", "--socket", sock, "--port", "sink"]
        be_pid = peers.start("vhtune backend", argv, "backend.log").pid
        peers.wait_for("the vhtune back-end socket", lambda: os.path.exists(sock))
        fe = peers.testpmd("testpmd front-end", tag, f"net_virtio_user0,path={sock}", "frontend.log")
        peers.wait_for("a vhtune-q<n> ring thread", lambda: _has_thread(be_pid, "vhtune-q"))
        yield VhtunePair(sock, be_pid, fe.pid)
    finally:
        peers.close()
