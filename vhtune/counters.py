"""Deltas of monotonic counters read from something that can be re-created under the same name."""

from __future__ import annotations

from collections.abc import Mapping


def counter_deltas(now: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """``now - before`` per counter. A counter that went back means the object was re-created (a tap deleted and
    made again under its name, a back-end restarted on the same control socket): it counts from 0 then."""
    if any(now[k] < before[k] for k in now):
        return dict(now)
    return {k: now[k] - before[k] for k in now}
