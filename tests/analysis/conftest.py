from __future__ import annotations

from pathlib import Path

import pytest

from vhtune.analysis.synthetic import SynthSpec, write_synthetic


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("synth") / "rec"
    return write_synthetic(d, SynthSpec(vms=3, duration_s=12, faults={1: "cpu-hog"}, seed=3))
