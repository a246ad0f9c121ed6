"""Struct mirrors vs the C header, the kprobe variant's compile/verifier test, drop-reason names."""

from __future__ import annotations

import ctypes as ct
from pathlib import Path
from typing import Any

import pytest

from vhtune.errors import ProbeError
from vhtune.probes import ProbeConfig, Probes
from vhtune.probes.layouts import MAPS, check_layouts
from vhtune.probes.loader import FAMILIES, NET_COUNTERS, VHOST_KPROBES, compile_module, possible_cpus
from vhtune.probes.reasons import drop_reasons, parse


@pytest.mark.root
def test_every_map_matches_its_mirror(probes: Probes) -> None:
    names = [m for fam in FAMILIES for m in probes.config.family(fam)[2]] + ["lost"]
    check_layouts(probes.bpf, names)  # raises on any size difference
    assert probes.families == dict.fromkeys(FAMILIES, "attached")
    # This host has BTF: the net family runs its counters variant (tests/probes/test_net.py covers both).
    assert probes.variants["net"].startswith("counters"), probes.variants


class _FakeTable:
    Key = ct.c_uint32
    Leaf = ct.c_uint64 * 3  # not what layouts.py says for thread_stats


def test_a_size_mismatch_is_a_clear_probe_error() -> None:
    fake: dict[bytes, Any] = {b"thread_stats": _FakeTable()}
    with pytest.raises(ProbeError, match=r"thread_stats: value is 24 bytes in probes/vhtune\.h but 56"):
        check_layouts(fake, ["thread_stats"])
    assert set(MAPS) >= {m for fam in [*FAMILIES.values(), NET_COUNTERS] for m in fam[2]}


@pytest.mark.root
def test_vhost_kprobe_variant_compiles_and_passes_the_verifier() -> None:
    # This host has no kprobes, so the variant can only be compiled and loaded (verifier), not attached.
    import bcc  # the distro python3-bpfcc, importable after `make setup`

    bpf = compile_module(["sched", "notify"], kprobes=True, config=ProbeConfig(), ncpus=possible_cpus())
    try:
        for fn in VHOST_KPROBES:
            assert bpf.load_func(fn.encode(), bcc.BPF.KPROBE).fd >= 0
        check_layouts(bpf, ["vhost_events"])
    finally:
        bpf.cleanup()


def test_drop_reasons_come_from_the_format_file() -> None:
    text = 'print fmt: "...", __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 80, "FULL_RING" })'
    assert parse(text) == {2: "NOT_SPECIFIED", 80: "FULL_RING"}


@pytest.mark.root
def test_running_kernel_names_full_ring() -> None:
    assert Path("/sys/kernel/tracing/events/skb/kfree_skb/format").exists()
    assert "FULL_RING" in drop_reasons().values()


@pytest.mark.root
def test_in_process_load_counts_like_the_child_path() -> None:
    # The default compiles in a child and keeps only fds; the in-process bcc path (used for the kprobe
    # variant) must count the same.
    import os

    from vhtune.probes import FdTarget, ProbeMaps, TargetSet, load

    probes = load(ProbeConfig(families=("notify",), compile_in_child=False))
    try:
        assert probes.variants["compile"] == "in-process (bcc)"
        maps = ProbeMaps(probes)
        efd = os.eventfd(0)
        try:
            ts = TargetSet()
            ts.add_fd(FdTarget(os.getpid(), efd, "kick", 0))
            maps.apply(ts)
            maps.read()
            for _ in range(100):
                os.eventfd_write(efd, 1)
            assert maps.read().fds[(os.getpid(), efd)] == {"writes": 100, "reads": 0, "injections": 0}
        finally:
            os.close(efd)
    finally:
        probes.close()


RSS_PROBE = """
import sys
import pandas, pyarrow.parquet  # what the recorder holds anyway
from vhtune.probes import load
p = load()
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
mb = {k: int(status[k].split()[0]) // 1024 for k in ("VmRSS", "RssAnon", "RssFile")}
print(p.variants["compile"], "bcc" in sys.modules, mb["VmRSS"], mb["RssAnon"], mb["RssFile"])
p.close()
"""


@pytest.mark.root
def test_child_path_keeps_llvm_out_of_the_agent() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", RSS_PROBE], capture_output=True, text=True, timeout=120, check=True)
    compile_where, bcc_loaded, rss, anon, file = out.stdout.strip().rsplit(" ", 4)
    print(f"VmRSS {rss} MB: {anon} MB anonymous, {file} MB file-backed")
    assert compile_where == "child process (fds handed over)" and bcc_loaded == "False"
    # LLVM in the agent would add ~125 MB of its own. The file-backed part (shared library text of pandas,
    # pyarrow, numpy) depends on the page cache — fault-around maps neighbours that happen to be resident: the
    # same venv files gave 52 MB in a long-used checkout and 88 MB in a fresh clone — so the bound is on the
    # memory the agent itself allocates.
    assert int(anon) < 100, f"RssAnon {anon} MB (VmRSS {rss} MB)"
