"""tap-drops on a real tap with a real slow reader, recorded by the real `vhtune record` (no lab scenario needed).

A tap inside a network namespace the test creates; a reader process attached to it reads one frame every
``delay`` seconds; UDP packets are sent out of the tap from inside the namespace (to a static neighbour on the
tap's own subnet, so nothing leaves the namespace). With txqueuelen 4 the kernel drops on the tap (kfree_skb,
attributed to the tap); with the default 1000 and a reader that keeps up, nothing is dropped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vhtune import api
from vhtune.lab.names import lab_name
from vhtune.lab.netns import Netns, tap

RECORD = [sys.executable, "-m", "vhtune", "record", "--json"]
READER = textwrap.dedent(
    """
    import fcntl, os, select, struct, sys, time
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", sys.argv[1].encode(), 0x0002 | 0x1000))  # TUNSETIFF TAP|NO_PI
    delay, end = float(sys.argv[2]), time.monotonic() + float(sys.argv[3])
    while time.monotonic() < end:
        if select.select([fd], [], [], 0.2)[0]:
            os.read(fd, 65536)
            if delay:
                time.sleep(delay)
    """
)
SENDER = textwrap.dedent(
    """
    import socket, sys, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    end, gap, n = time.monotonic() + float(sys.argv[1]), float(sys.argv[2]), 0
    while time.monotonic() < end and n < 200_000:
        try:
            s.sendto(b"x" * 64, ("10.77.0.2", 9))
        except OSError:
            pass  # ENOBUFS when the queue is full: the kernel counted the drop
        n += 1
        if gap:
            time.sleep(gap)
    print(n)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("qlen", "delay", "gap", "want"),
    [(4, 0.02, 0.0, "tap-drops"), (1000, 0.0, 0.002, None)],
    ids=["tiny-txqueuelen-slow-reader", "healthy"],
)
def test_tap_drops_real(qlen: int, delay: float, gap: float, want: str | None, tmp_path: Path) -> None:
    out = tmp_path / "rec"
    with Netns() as ns:
        name = lab_name("t")
        tap(ns, name)
        ns.ip("link", "set", "dev", name, "txqueuelen", str(qlen))
        ns.addr(name, "10.77.0.1/24")
        ns.up(name)
        ns.ip("neigh", "replace", "10.77.0.2", "lladdr", "02:00:00:00:77:02", "dev", name)
        reader = ns.spawn([sys.executable, "-c", READER, name, str(delay), "20"], name="slow reader")
        try:
            time.sleep(0.5)
            rec_p = subprocess.Popen(
                [*RECORD, "-o", str(out), "-p", str(reader.pid), "--tap", name, "--duration", "5", "--interval", "0.5"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if "probes" in json.loads((out / "manifest.json").read_text()):
                        break
                except (OSError, ValueError):
                    pass
                assert rec_p.poll() is None, rec_p.communicate()[1][-1500:]
                time.sleep(0.1)
            sent = ns.run([sys.executable, "-c", SENDER, "3", str(gap)]).stdout.strip()
            _, err = rec_p.communicate(timeout=60)
            kernel = ns.link_stats(name)
        finally:
            reader.stop(timeout=2.0)
    rec = api.load(out)
    assert rec.intervals >= 4, err[-1500:]
    recorded_drops = int(rec.taps["drops"].sum())
    print(f"sent {sent}, kernel tx_dropped {kernel['tx_dropped']}, recorded drops {recorded_drops}")
    findings = api.analyze(rec)
    for f in findings:
        print(" ", f.id, f.subject, f.severity, f.evidence[0].sentence())
    loud = [f for f in findings if f.severity != "info" and f.id in ("tap-drops", "rx-ring-starved")]
    if want is None:
        assert loud == [] and recorded_drops == 0
        return
    assert recorded_drops > 100 and abs(recorded_drops - kernel["tx_dropped"]) <= 0.01 * kernel["tx_dropped"]
    top = loud[0]
    assert top.id == want and top.subject == f"tap {ns.name}/{name}"  # a tap outside the root netns: NETNS/NAME
    first = top.recommendations[0]
    assert first.knob == "tap-txqueuelen" and first.current == 4 and first.proposed == 1000
    assert first.command == f"ip -n {ns.name} link set dev {name} txqueuelen 1000"
