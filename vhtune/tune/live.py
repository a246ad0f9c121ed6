"""A live data path for `vhtune tune auto --scenario`: a lab scenario running in the background long enough
for two recordings, and the resolution of ``pid=auto`` targets to what discovery finds in it."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

from vhtune.discover import discover
from vhtune.errors import LabError, TuneError, VhtuneError
from vhtune.tune.knob import Target

READY_TIMEOUT_S = 60.0


@dataclass
class Live:
    summary: dict[str, Any] = field(default_factory=dict)  # the scenario's JSON summary, once it ended
    backend_pids: tuple[int, ...] = ()  # back-ends the scenario started (empty: everything on the host)


def _own(pid: int) -> bool:
    """``pid`` was started by this process (the lab's children and grandchildren)."""
    try:
        return any(p.pid == os.getpid() for p in psutil.Process(pid).parents())
    except psutil.Error:
        return False


@contextlib.contextmanager
def live_scenario(name: str | None, faults: list[str], backend: str, duration_s: float) -> Iterator[Live]:
    """Run lab scenario ``name`` for ``duration_s`` in a thread while the body runs. Without a name the body
    works on whatever runs on the host."""
    live = Live()
    if name is None:
        yield live
        return
    from vhtune.lab import scenarios

    opts = scenarios.RunOptions(duration=duration_s, backend=backend, faults=faults)
    opts.validate()
    errors: list[VhtuneError] = []

    def body() -> None:
        try:
            live.summary.update(scenarios.run(name, opts))
        except VhtuneError as exc:
            errors.append(exc)

    th = threading.Thread(target=body, name=f"lab-{name}", daemon=True)
    th.start()
    live.backend_pids = _wait_ready(th, errors, opts.started)
    try:
        yield live
    finally:
        opts.stop.set()  # the loop is done with the data path: end the scenario's traffic now
        th.join(60)
    if errors:
        raise LabError(f"lab scenario {name} failed: {errors[0].message}")


def _wait_ready(th: threading.Thread, errors: list[VhtuneError], started: threading.Event) -> tuple[int, ...]:
    """Until the scenario says its faults and traffic run and discovery sees its back-end serving a front-end,
    then one more second of traffic. A baseline recorded before a fault applied at start (tap-rx's txqueuelen 4)
    would see the healthy path: its discovery snapshot would carry the old txqueuelen."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if errors or not th.is_alive():
            raise LabError(f"lab scenario ended before it served traffic: {errors[0].message if errors else ''}")
        if not started.wait(0.2):
            continue
        snap = discover(guest_memory_numa=False)
        own = tuple(b.pid for b in snap.backends if b.frontend_pids and _own(b.pid))
        if own:
            time.sleep(1.0)
            return own
        time.sleep(0.2)
    raise LabError("the lab scenario's back-end did not come up within a minute")


def resolve_auto_target(t: Target, live: Live) -> Target:
    """``pid=auto`` → the pid of the back-end the scenario started."""
    if t.ident.get("pid") != "auto":
        return t
    if len(live.backend_pids) != 1:
        raise TuneError("pid=auto needs --scenario (it names the scenario's back-end)", "give pid=N instead")
    return Target(t.kind, {**t.ident, "pid": live.backend_pids[0]})
