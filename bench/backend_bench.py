"""vhtune backend throughput against anchors measured in the same run (python -m bench backend [-- --quick]).

1. sink pps vs DPDK's own vhost PMD (net_vhost0, rxonly), same virtio-user txonly front-end, 64 B and 1518 B,
   alternated, medians; 2. gen (back-end → guest) vs net_vhost0 txonly; 3. sink pps vs burst size and queue
   pairs; 4. tap port pps vs raw os.write of the same frames from one Python thread to the same tap (in a
   netns); 5. idle CPU and RSS with a connected, idle front-end. testpmd forwards on CPU 0, the back-ends on 1.
"""

from __future__ import annotations

import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from vhtune.backend import net
from vhtune.backend.ports import Tap
from vhtune.backend.proc import BackendProcess
from vhtune.lab import dpdk

WARM, WINDOW = 0.5, 1.0
OURS = ("--cpu", "1", "--burst", "256", "--busy-poll-us", "50")


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the peer")
        time.sleep(0.02)


def _rate(read: Callable[[], int]) -> float:
    time.sleep(WARM)
    p0, t0 = read(), time.monotonic()
    time.sleep(WINDOW)
    p1, t1 = read(), time.monotonic()
    return (p1 - p0) / (t1 - t0)


def _fe(sock: str, mode: str, size: int = 64, queues: int = 1) -> dpdk.Testpmd:
    return dpdk.frontend(Path(sock), mode=mode, fwd_cpu=0, main_cpu=1, txpkts=size, queues=queues)


def ours(port: str, mode: str, size: int = 64, queues: int = 1, extra: tuple[str, ...] = OURS) -> float:
    with tempfile.TemporaryDirectory(prefix="vhbb") as d:
        be = BackendProcess(Path(d), port, *extra, "--queues", str(queues))
        try:
            with _fe(be.sock, mode, size, queues) as t:
                idx = [2 * q + (1 if mode == "txonly" else 0) for q in range(queues)]
                _wait(lambda: all(be.control.stats()["queues"][i]["running"] for i in idx))
                t.start()
                pps = _rate(lambda: sum(be.control.stats()["queues"][i]["packets"] for i in idx))
                t.stop()
            return pps
        finally:
            be.stop()


def anchor(be_mode: str, fe_mode: str, size: int = 64) -> float:
    with tempfile.TemporaryDirectory(prefix="vhbb") as d:
        sock = Path(d) / "vu.sock"
        with dpdk.backend(sock, mode=be_mode, fwd_cpu=1, main_cpu=0, txpkts=size) as be:
            be.start()
            with _fe(str(sock), fe_mode, size) as t:
                be.wait_link()
                t.start()
                attr = "rx_packets" if be_mode == "rxonly" else "tx_packets"
                pps = _rate(lambda: dpdk.total(be.port_stats(), attr))
                t.stop()
            be.stop()
        return pps


def with_burst(burst: int) -> float:
    return ours("sink", "txonly", extra=("--cpu", "1", "--burst", str(burst), "--busy-poll-us", "50"))


def _testpmd_like_frame(size: int) -> bytes:
    """What testpmd txonly sends by default: IPv4/UDP 198.18.0.1:9 → 198.18.0.2:9 to 02:00:00:00:00:00."""
    ip_len = size - 14
    ip = bytearray(
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, 0, 0, 64, 17, 0, bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
    )
    csum = sum(struct.unpack("!10H", bytes(ip)))
    csum = (csum & 0xFFFF) + (csum >> 16)
    struct.pack_into("!H", ip, 10, ~csum & 0xFFFF)
    udp = struct.pack("!HHHH", 9, 9, ip_len - 20, 0)
    eth = bytes.fromhex("0200000000000200000000010800")
    return eth + bytes(ip) + udp + bytes(size - 14 - 20 - 8)


def tap_pair(ns: str, name: str) -> tuple[float, float]:
    """(vhtune tap port pps, raw single-thread os.write pps) for 64-byte frames into the same tap."""
    frame = bytes(net.HDR_LEN) + _testpmd_like_frame(64)
    tap = Tap(name, ns, 1)
    n, stop = 0, time.monotonic() + WARM + WINDOW
    t_start = time.monotonic() + WARM
    counted = 0
    try:
        fd = tap.fds[0]
        while (now := time.monotonic()) < stop:
            for _ in range(256):
                try:
                    os.write(fd, frame)
                    n += 1
                except BlockingIOError:
                    pass
            if now < t_start:
                counted = n
    finally:
        tap.close()
    raw = (n - counted) / WINDOW
    port = ours(f"tap:{name}@{ns}", "txonly")
    return port, raw


def idle() -> tuple[float, float]:
    """CPU % and RSS MB of a back-end with a connected front-end that sends nothing."""
    with tempfile.TemporaryDirectory(prefix="vhbb") as d:
        be = BackendProcess(Path(d), "sink", "--cpu", "1")
        try:
            with _fe(be.sock, "txonly"):
                _wait(lambda: be.control.stats()["queues"][1]["running"])
                p = psutil.Process(be.pid)
                time.sleep(0.5)
                c0, t0 = sum(p.cpu_times()[:2]), time.monotonic()
                time.sleep(2.0)
                cpu = (sum(p.cpu_times()[:2]) - c0) / (time.monotonic() - t0) * 100
                rss = p.memory_info().rss / 2**20
            return cpu, rss
        finally:
            be.stop()


def profile(seconds: float = 3.0) -> str:
    """py-spy top functions of the sink worker under txonly load (empty when py-spy is missing)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return "py-spy not installed (pip install py-spy)"
    with tempfile.TemporaryDirectory(prefix="vhbb") as d:
        be = BackendProcess(Path(d), "sink", *OURS)
        try:
            with _fe(be.sock, "txonly") as t:
                _wait(lambda: be.control.stats()["queues"][1]["running"])
                t.start()
                out = Path(d) / "prof.txt"
                cmd = [str(spy), "record", "-p", str(be.pid), "-d", str(int(seconds)), "-f", "raw", "-o", str(out)]
                subprocess.run(cmd, capture_output=True, timeout=seconds + 30, check=False)
                t.stop()
            return _top(out.read_text() if out.exists() else "")
        finally:
            be.stop()


def _top(raw: str, n: int = 8) -> str:
    """Self time per function from py-spy's collapsed stacks."""
    self_t: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, cnt = line.rpartition(" ")
        if "Worker.run" not in stack:  # the queue workers only (not the control or connection threads)
            continue
        leaf = stack.split(";")[-1].split(" (")[0]
        self_t[leaf] = self_t.get(leaf, 0) + int(cnt)
        total += int(cnt)
    rows = sorted(self_t.items(), key=lambda kv: -kv[1])[:n]
    return "\n".join(f"  {100 * c / max(total, 1):5.1f}%  {f}" for f, c in rows)


def main(argv: list[str]) -> int:
    runs = 2 if "--quick" in argv else 5
    lines = ["| measurement | vhtune | anchor | ratio |", "|---|---|---|---|"]

    def row(what: str, a: float, b: float, unit: str = "Mpps") -> None:
        scale = 1e6 if unit == "Mpps" else 1.0
        lines.append(f"| {what} | {a / scale:.2f} {unit} | {b / scale:.2f} {unit} | {a / b if b else 0:.2f}x |")
        print(lines[-1], flush=True)

    print("\n".join(lines), flush=True)
    for size in (64, 1518):
        o, a = [], []
        for _ in range(runs):  # alternated so drift and neighbours' load hit both sides alike
            o.append(ours("sink", "txonly", size))
            a.append(anchor("rxonly", "txonly", size))
        row(
            f"sink ← virtio-user txonly {size} B (median of {runs}) vs net_vhost0 rxonly",
            statistics.median(o),
            statistics.median(a),
        )
    o, a = [], []
    for _ in range(runs):
        o.append(ours("gen:64", "rxonly"))
        a.append(anchor("txonly", "rxonly"))
    row(
        f"gen:64 → virtio-user rxonly (median of {runs}) vs net_vhost0 txonly",
        statistics.median(o),
        statistics.median(a),
    )
    base = with_burst(32)
    for b in (1, 8, 32, 64, 128, 256):
        row(f"sink 64 B, burst {b} (anchor: burst 32)", with_burst(b), base)
    row("sink 64 B, 2 queue pairs (anchor: 1 pair)", ours("sink", "txonly", queues=2), ours("sink", "txonly"))
    ns = f"vhbb{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        port, raw = tap_pair(ns, f"vhbbt{os.getpid()}"[:15])
        row("tap port 64 B vs raw os.write from one Python thread", port, raw)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    cpu, rss = idle()
    lines.append(f"| idle back-end, front-end connected: CPU | {cpu:.2f} % | | |")
    lines.append(f"| idle back-end: RSS | {rss:.0f} MB | | |")
    print("\n".join(lines[-2:]))
    print("\npy-spy, sink worker under txonly load (self time):")
    print(profile())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
