"""Events the maps cannot hold are counted, not silently dropped: a module built with tiny hash maps."""

from __future__ import annotations

import contextlib
import time

import pytest

from tests.probes.helpers import spawned
from vhtune.probes import ProbeConfig, ProbeMaps, TargetSet, ThreadTarget, load

pytestmark = pytest.mark.root

SPIN = "import time\nend = time.monotonic() + 2\nprint('go', flush=True)\nwhile time.monotonic() < end: pass\n"
SLEEPER = (
    "import time\nend = time.monotonic() + 2\nprint('go', flush=True)\n"
    "while time.monotonic() < end: time.sleep(0.0005)\n"
)


def test_full_competitor_map_is_counted_as_lost(require_root: None) -> None:
    probes = load(ProbeConfig(families=("sched",), extra_cflags=("-DVHT_HASH_ENTRIES=2",)))
    try:
        maps = ProbeMaps(probes)
        with contextlib.ExitStack() as stack:
            target = stack.enter_context(spawned(SLEEPER, cpu=1))
            hogs = [stack.enter_context(spawned(SPIN, cpu=1)) for _ in range(4)]
            for p in (target, *hogs):
                assert p.stdout is not None and p.stdout.readline().strip() == "go"
            ts = TargetSet()
            ts.add_thread(ThreadTarget(target.pid, target.pid, "sleeper", "backend-worker"))
            maps.apply(ts)
            maps.read()
            time.sleep(1.0)
            d = maps.read()
        assert len(d.competitors) <= 2  # the map holds two (tid, cpu) keys
        assert d.lost["competitor_map_full"] > 0
        assert probes.families["net"] == "missing: not requested"
    finally:
        probes.close()
