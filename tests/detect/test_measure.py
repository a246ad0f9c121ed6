"""measure(): the target metric of a finding on a recording before and after its fix (the closed loop's test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vhtune import api
from vhtune.analysis.synthetic import SynthSpec, write_synthetic


@pytest.mark.parametrize(
    ("fault", "metric", "better"),
    [
        ("cpu-hog", "runq_pct", "lower"),
        ("burst-1", "burst", "higher"),
        ("tiny-txqueuelen", "drops_per_s", "lower"),
        ("notify-storm", "kicks_per_pkt", "lower"),
        ("rx-starve", "drops_per_s", "lower"),
    ],
)
def test_before_and_after(fault: str, metric: str, better: str, tmp_path: Path) -> None:
    before = api.load(write_synthetic(tmp_path / "b", SynthSpec(vms=1, duration_s=8, faults={0: fault})))
    after = api.load(write_synthetic(tmp_path / "a", SynthSpec(vms=1, duration_s=8, seed=2)))  # fault removed
    f = api.analyze(before)[0]
    m0, m1 = api.measure(before, f), api.measure(after, f)
    assert (m0.metric, m0.better) == (metric, better)
    assert m0.value is not None and m1.value is not None and m0.pps and m1.pps
    gain = m0.improvement(m1)
    assert gain is not None and gain > 0.25, (m0, m1)
    back = m1.improvement(m0)  # the other way round it is worse (undefined from zero drops: no relative change)
    assert (back is None and m1.value == 0) or (back is not None and back < 0)


def test_subject_missing(tmp_path: Path) -> None:
    rec = api.load(write_synthetic(tmp_path / "b", SynthSpec(vms=2, duration_s=5, faults={1: "cpu-hog"})))
    other = api.load(write_synthetic(tmp_path / "o", SynthSpec(vms=1, duration_s=5)))  # has no vm1
    f = api.analyze(rec)[0]
    m = api.measure(other, f)
    assert m.value is None and m.pps is None and api.measure(rec, f).improvement(m) is None
