"""Agent soak: `vhtune agent` RSS over time while VMs come and go (paused TCG QEMUs with a vhost-user netdev
served by vhtune back-ends, started and stopped in turn). Prints RSS samples and the ratio last/first (anchor:
the agent's own RSS once its first segment is attached). Bounded: --minutes (default 10), churn every 5 s.

    python -m bench agent_soak -- --minutes 10
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from vhtune.backend.proc import BackendProcess


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_vm(work: Path, i: int) -> tuple[BackendProcess, subprocess.Popen[bytes]]:
    d = work / f"vm{i}"
    d.mkdir()
    be = BackendProcess(d, "sink")
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-S", "-display", "none", "-nodefaults", "-m", "128",
            "-name", f"soak{i},debug-threads=on", "-object", "memory-backend-memfd,id=mem,size=128M,share=on",
            "-numa", "node,memdev=mem", "-chardev", f"socket,id=c0,path={be.sock}",
            "-netdev", "vhost-user,id=n0,chardev=c0",
            "-device", "virtio-net-pci,netdev=n0,romfile=,vectors=0"]  # fmt: skip
    vm = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return be, vm


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench agent_soak")
    ap.add_argument("--minutes", type=float, default=10.0)
    args = ap.parse_args(argv)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = Path(tempfile.mkdtemp(prefix="vhtune-soak-"))
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vhtune",
            "agent",
            "--listen",
            f"127.0.0.1:{port}",
            "--segment",
            "60",
            "--interval",
            "1",
            "--refresh",
            "2",
            "--analyze-every",
            "15",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    vms: list[tuple[BackendProcess, subprocess.Popen[bytes]]] = []
    samples: list[tuple[float, float, int]] = []
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    i = 0
    try:
        time.sleep(8)  # first segment attached
        next_sample = time.monotonic()
        while time.monotonic() < end:
            if len(vms) < 3:
                vms.append(start_vm(work, i))
                i += 1
            else:
                be, vm = vms.pop(0)
                vm.kill()
                vm.wait()
                be.stop()
            if time.monotonic() >= next_sample:
                series = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().count(b"\n")
                samples.append((time.monotonic() - t0, rss_mb(agent.pid), series))
                next_sample += 30
            time.sleep(5)
    finally:
        for be, vm in vms:
            vm.kill()
            vm.wait()
            be.stop()
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
    print(f"agent soak: {args.minutes:g} min, {i} VMs started and stopped (3 at a time), churn every 5 s")
    print(f"{'t (s)':>8} {'RSS MB':>8} {'metric lines':>13}")
    for t, r, n in samples:
        print(f"{t:8.0f} {r:8.1f} {n:13d}")
    first, last, peak = samples[0][1], samples[-1][1], max(r for _, r, _ in samples)
    print(f"RSS first {first:.1f} MB, last {last:.1f} MB, peak {peak:.1f} MB; last/first {last / first:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
