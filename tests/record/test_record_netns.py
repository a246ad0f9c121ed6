"""Kata Containers and the like: one VM per network namespace, each with a tap of the same name. A real
recording (the Recorder, real discovery of taps this process holds) keeps one row per (netns, tap) per
interval, and the packets and drops of traffic into one netns land on that netns's row only."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.probes.helpers import NetnsTap, eth_frame, ip, netns_tap
from tests.record.conftest import RecorderThread
from vhtune.record import Recorder, RecordOptions, Selection, read_manifest, read_table

pytestmark = pytest.mark.root

FRAMES = 400  # written into A's tap fd: rx packets on A, each dropped by A's stack (nobody takes ethertype 0x88b5)
DATAGRAMS = 300  # sent inside A to a neighbour on A's tap; txqueuelen 4 and nobody reading: nearly all dropped
UDP_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[1])):
    s.sendto(bytes(200), ("10.213.0.2", 9))
"""


def _own_bpf_fds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("anon_inode:bpf"):
                out.append(link)
    return out


def _netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=20).stdout


@pytest.mark.parametrize("variant", ["counters", "tracepoints"])
def test_same_named_taps_in_two_netns_record_as_two_rows(tmp_path: Path, require_root: None, variant: str) -> None:
    from vhtune.probes import ProbeConfig

    bpf_before = _own_bpf_fds()
    out = tmp_path / "rec"
    name = f"vhrkata{os.getpid()}"[:15]
    with netns_tap(name=name, txqueuelen=4) as a, netns_tap(name=name, addr="10.213.0.1/24") as b:
        spaces = (a.ns, b.ns)
        ip("-n", a.ns, "neigh", "replace", "10.213.0.2", "lladdr", "02:00:00:00:00:02", "dev", name)
        sel = Selection(pids=(os.getpid(),))  # the taps this process holds: both
        opts = RecordOptions(
            out,
            sel,
            interval=0.5,
            duration=3.0,
            refresh_s=60.0,
            probe_config=ProbeConfig(families=("net",), net_variant=variant),
        )
        th = RecorderThread(Recorder(opts), out)
        try:
            th.start_attached()
            b0 = b.stats()
            for _ in range(FRAMES):
                os.write(a.fd, eth_frame(100))
            _send(a, DATAGRAMS)
            a_truth, b_truth = a.stats(), b.stats()
        finally:
            th.join()
        assert b_truth == b0
    assert "summary" in th.result, th.result
    assert not set(spaces) & set(_netns_list().split()), "test netns left behind"
    assert _own_bpf_fds() == bpf_before, "BPF programs or maps left open"
    taps = read_table(out, "taps")
    drops = read_table(out, "tap_drops")
    man = read_manifest(out)
    taps = taps[taps["ifname"] == name]
    if variant == "tracepoints":  # names only: one row, and the recording says why
        assert set(taps["netns"]) <= set(spaces) and taps["netns"].nunique() == 1
        assert any(name in w and "by name only" in w for w in man.get("warnings", [])), man.get("warnings")
        assert any(name in w for w in th.result["summary"].warnings)
        return
    assert not man.get("warnings")
    per_interval = taps.groupby("ts")["netns"].apply(sorted)
    assert len(per_interval) >= 4 and all(v == sorted(spaces) for v in per_interval), per_interval
    tot = taps.groupby("netns")[["rx_packets", "tx_queued", "drops"]].sum()
    assert tot.loc[a.ns, "rx_packets"] == a_truth["rx_packets"] == FRAMES
    assert tot.loc[[b.ns]].to_numpy().tolist() == [[0, 0, 0]]
    by_ns = drops[drops["ifname"] == name].groupby(["netns", "direction"])["count"].sum()
    assert set(by_ns.index.get_level_values(0)) == {a.ns}
    assert by_ns[(a.ns, "rx")] == FRAMES
    assert by_ns[(a.ns, "tx")] == a_truth["tx_dropped"] >= DATAGRAMS // 2
    assert tot.loc[a.ns, "drops"] == FRAMES + a_truth["tx_dropped"]


def _send(tap: NetnsTap, n: int) -> None:
    subprocess.run(tap.exec_argv([sys.executable, "-c", UDP_SENDER, str(n)]), check=True, timeout=60)
    time.sleep(0.1)  # the last drops are counted before the truth is read (not an assertion on time)
