"""`vhtune bench`: the source tree's benchmarks behind the CLI name the architecture gives them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vhtune.cli import bench_cmd, main

VHTUNE = [sys.executable, "-m", "vhtune"]


def test_list_names_every_benchmark_module() -> None:
    out = subprocess.run([*VHTUNE, "bench", "--list"], capture_output=True, text=True, timeout=60, check=True).stdout
    bench_dir = Path(bench_cmd.__file__).resolve().parents[2] / "bench"
    want = {p.stem.removesuffix("_bench") for p in bench_dir.glob("*.py") if not p.stem.startswith("_")}
    assert {line.split()[0] for line in out.splitlines()} == want


def test_runs_a_benchmark_with_its_options_and_refuses_an_unknown_one(require_root: None) -> None:
    # counters: BTF offsets against bpftool, and tap counters in 4 netns against ip -s (≈ 3 s, needs root).
    p = subprocess.run([*VHTUNE, "bench", "counters"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "ratio" in p.stdout and "read_counters" in p.stdout
    p = subprocess.run([*VHTUNE, "bench", "nosuch", "--seconds", "1"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no benchmark 'nosuch'" in p.stdout and "record" in p.stdout


def test_outside_a_checkout_it_says_where_the_benchmarks_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_cmd, "_TREE", tmp_path)  # an installed vhtune: no bench/ beside the package
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--list"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("vhtune: error: the benchmarks ship with the source tree")
    assert "Traceback" not in err


def test_names_are_checked_before_any_benchmark_runs() -> None:
    """`python -m bench record --help` used to run the record benchmark for minutes, then refuse '--help'."""
    for argv, said in ((["record", "--help"], "'--help' is an option"), (["counters", "nosuch"], "'nosuch'")):
        p = subprocess.run([sys.executable, "-m", "bench", *argv], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and said in p.stdout, p.stdout
        assert "read_counters" not in p.stdout  # counters did not run first
