"""What the net counters variant costs the recorder per start and per interval (run as root):

    .venv/bin/python -m bench counters [-- --calls 200 --netns 4]

- start: parsing the kernel BTF (/sys/kernel/btf/vmlinux) and resolving the offsets the kfree_skb raw
  tracepoint is compiled with (vhtune/probes/net_variant.py), against ``bpftool btf dump`` of the same blob
  as the anchor (the usual way to get them);
- per interval: ``read_counters`` for one root-netns tap and N taps in N netns (a setns'd thread per netns),
  against reading each tap's sysfs counters through ``ip -n NS -s -j link`` as the anchor.
Prints medians and the ratios (ours ÷ anchor: lower is better).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _median_s(fn: object, n: int) -> float:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--netns", type=int, default=4)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("counters bench: needs root (netns, taps)")
        return 2
    from tests.probes.helpers import netns_tap
    from vhtune.probes.net_variant import counters_offsets
    from vhtune.probes.netdev import read_counters

    btf_s = _median_s(counters_offsets, 5)
    dump = ["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"]
    dump_s = _median_s(lambda: subprocess.run(dump, capture_output=True, check=True), 3)
    print(
        f"start: BTF offsets {btf_s * 1e3:.1f} ms; bpftool btf dump {dump_s * 1e3:.1f} ms; ratio {btf_s / dump_s:.3f}"
    )
    with contextlib.ExitStack() as stack:
        taps = [stack.enter_context(netns_tap(addr=None)) for _ in range(a.netns)]
        wanted = [(t.ns, t.name) for t in taps]
        ours = _median_s(lambda: read_counters(wanted), a.calls)

        def via_ip() -> None:
            for t in taps:
                subprocess.run(["ip", "-n", t.ns, "-s", "-j", "link", "show", "dev", t.name], capture_output=True)

        anchor = _median_s(via_ip, max(5, a.calls // 20))
    print(
        f"per interval, {a.netns} taps in {a.netns} netns: read_counters {ours * 1e3:.2f} ms; "
        f"ip -s -j link per tap {anchor * 1e3:.2f} ms; ratio {ours / anchor:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
