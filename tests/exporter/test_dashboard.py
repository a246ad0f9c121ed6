"""The Grafana dashboard only queries metrics the exporter really serves."""

from __future__ import annotations

import json
import re
from pathlib import Path

from vhtune.exporter.collector import HELP

DASH = Path(__file__).resolve().parents[2] / "packaging" / "grafana-dashboard.json"
SERVED = {n for n in HELP} | {
    "vhtune_thread_oncpu_ratio",
    "vhtune_thread_runq_wait_seconds_bucket",
    "vhtune_finding_active",
    "vhtune_probe_info",
    "vhtune_intervals",
}


def test_every_panel_queries_a_served_metric() -> None:
    dash = json.loads(DASH.read_text())
    assert dash["panels"], "dashboard has no panels"
    for panel in dash["panels"]:
        for target in panel["targets"]:
            names = set(re.findall(r"\bvhtune_[a-z_]+", target["expr"]))
            assert names, panel["title"]
            assert names <= SERVED, (panel["title"], names - SERVED)
