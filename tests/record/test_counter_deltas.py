"""Counter deltas across a re-created source: a tap made again under its name, a back-end restarted on the same
control socket. Its counters start again at 0, and its first interval counts from 0, not against the old totals."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from vhtune.counters import counter_deltas
from vhtune.record import backend_counters


def test_deltas_count_from_zero_when_a_counter_went_back() -> None:
    assert counter_deltas({"a": 15, "b": 7}, {"a": 10, "b": 7}) == {"a": 5, "b": 0}
    assert counter_deltas({"a": 3, "b": 9}, {"a": 10, "b": 7}) == {"a": 3, "b": 9}


class _FakeClient:
    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = replies

    def stats(self) -> dict[str, Any]:
        return self.replies.pop(0)


def test_backend_restarted_on_the_same_socket_counts_its_first_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    def reply(pid: int, packets: int) -> dict[str, Any]:
        return {"pid": pid, "queues": [{"index": 1, "dir": "tx", "packets": packets, "drops": {}}]}

    fake = _FakeClient([reply(10, 1000), reply(10, 1500), reply(11, 40)])  # canned control-socket replies
    monkeypatch.setattr(backend_counters, "ControlClient", lambda control, timeout: fake)
    s = backend_counters.BackendSampler("/run/nowhere.ctl")
    ts = pd.Timestamp("2026-01-01", tz="UTC")
    assert s.sample(ts, 0.0) == []  # baseline
    assert [r["packets"] for r in s.sample(ts, 1.0)] == [500]
    assert [r["packets"] for r in s.sample(ts, 1.0)] == [40]  # restarted: 40 new packets, not max(0, 40 - 1500)
