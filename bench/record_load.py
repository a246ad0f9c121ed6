"""Load generators for bench/record_bench.py, run as child processes so the recorder can watch them by pid.

``python bench/record_load.py tap SECONDS NETNS`` — creates a tap, moves it into NETNS (created by the
bench), then writes 64-byte frames to it; ``eventfd SECONDS`` — writes one eventfd in a loop. Both print
``ready PID NAME`` and wait for a line on stdin, run for SECONDS (bounded), print ``rate OPS_PER_S`` and
exit (the tap dies with its fd).
"""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
FRAME = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + bytes(50)  # 64 B, local ethertype


def _tap(netns: str) -> tuple[int, str]:
    name = f"vhrb{os.getpid()}"[:15]
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    subprocess.run(["ip", "link", "set", "dev", name, "netns", netns], check=True)
    subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1"], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", "dev", name, "up"], check=True)
    return fd, name


def main() -> None:
    kind, seconds = sys.argv[1], float(sys.argv[2])
    if kind == "tap":
        fd, name = _tap(sys.argv[3])
        payload = FRAME
    else:
        fd, name = os.eventfd(0, os.EFD_NONBLOCK), "-"
        payload = struct.pack("<Q", 1)
    print(f"ready {os.getpid()} {name}", flush=True)
    sys.stdin.readline()
    n = 0
    write = os.write
    t0 = time.monotonic()
    end = t0 + min(seconds, 60.0)
    while True:
        for _ in range(1000):
            write(fd, payload)
        n += 1000
        if kind == "eventfd":
            os.eventfd_read(fd)  # keep the counter far from its maximum
        if time.monotonic() >= end:
            break
    print(f"rate {n / (time.monotonic() - t0):.0f}", flush=True)


if __name__ == "__main__":
    main()
