"""The analysis benchmark runs end to end (at a small scale here; docs/analysis.md has the 1 h x 64 VM figures)."""

from __future__ import annotations

import pytest

from bench import analysis_bench


def test_bench_small(capsys: pytest.CaptureFixture[str]) -> None:
    rc = analysis_bench.main(["--vms", "12", "--seconds", "120"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "load + analyze" in out and "HTML report" in out and "vs anchor" in out
    assert "findings: 1" in out  # the 10 faulty VMs (+ consequences) are found, the 2 healthy ones are not
