"""The analysis benchmark runs end to end (at a small scale here; docs/analysis.md has the 1 h x 64 VM figures)."""

from __future__ import annotations

import pytest

from bench import analysis_bench
from vhtune.detect.table import DETECTORS


def test_bench_small(capsys: pytest.CaptureFixture[str]) -> None:
    rc = analysis_bench.main(["--vms", "12", "--seconds", "120"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "load + analyze" in out and "HTML report" in out and "vs anchor" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("findings: "))
    for d in DETECTORS:  # VMs 0-9 carry one synthetic fault each, every detector fires once at least
        assert d.id in line, line
