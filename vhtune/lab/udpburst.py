"""A bounded, bursty UDP sender for the ``tap-rx`` scenario: ``python -m vhtune.lab.udpburst DEV DST SIZE BURST
PAUSE_MS SECONDS MAX_PACKETS``, run inside the lab netns (SIZE: the Ethernet frame's bytes without FCS).

It sends ``BURST`` datagrams back to back, sleeps ``PAUSE_MS``, and repeats until ``SECONDS`` passed, ``MAX_PACKETS``
were sent or SIGTERM arrived, then prints one JSON line with its counts. ``DST`` sits on the tap's subnet behind a
static neighbour entry, so every datagram is routed out of the tap (no ARP, nothing leaves the namespace; the
socket is also bound to DEV with SO_BINDTODEVICE, which puts the lab's tap name on the command line for
``vhtune lab clean``) and
lands in tun's queue: tun_net_xmit puts each skb in a ptr_ring of txqueuelen slots and frees it, counting
tx_dropped, when the ring is full. A burst therefore overflows a ring of 4 while a reader at burst 1 is still
waking up, yet fits in the default 1000; the average rate stays far below what that reader drains.

Stdlib only, so it starts fast and imports nothing of the analysis stack.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time

PORT = 9  # discard
HEADERS = 14 + 20 + 8  # Ethernet + IPv4 + UDP: a SIZE-byte frame carries SIZE - HEADERS bytes of payload


def send(dev: str, dst: str, size: int, burst: int, pause_s: float, seconds: float, max_packets: int) -> dict[str, int]:
    stopping = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    sendto, data, addr = s.sendto, b"\0" * max(0, size - HEADERS), (dst, PORT)
    sent = errors = bursts = 0
    end = time.monotonic() + seconds
    while not stopping and sent + errors < max_packets and time.monotonic() < end:
        for _ in range(min(burst, max_packets - sent - errors)):
            try:
                sendto(data, addr)
                sent += 1
            except OSError:  # ENOBUFS and the like: the kernel refused this one
                errors += 1
        bursts += 1
        time.sleep(pause_s)
    return {"sent": sent, "errors": errors, "bursts": bursts}


def main(argv: list[str]) -> int:
    if len(argv) != 7:
        print(__doc__, file=sys.stderr)
        return 2
    dev, dst, size, burst, pause_ms, seconds, max_packets = argv
    out = send(dev, dst, int(size), int(burst), float(pause_ms) / 1000.0, float(seconds), int(max_packets))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
