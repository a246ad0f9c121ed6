"""docs/analysis.md documents every detector with its thresholds as the table has them."""

from __future__ import annotations

from pathlib import Path

from vhtune.detect.table import DETECTORS

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysis.md"


def test_every_detector_and_threshold_is_documented() -> None:
    text = DOC.read_text()
    for d in DETECTORS:
        assert f"`{d.id}`" in text, d.id
        for t in d.thresholds:
            assert f"{t.metric} {t.op} {t.value:g}" in text, (d.id, t.metric)
