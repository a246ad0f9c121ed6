"""A tap deleted and re-created under the same name (a VM restarted by libvirt reuses vnetN) starts its own
counters at 0: the counters variant must count its packets from there, not hold them back against the old
tap's totals."""

from __future__ import annotations

from typing import Any

from vhtune.probes.maps import TAP_FIELDS, Deltas, ProbeMaps, SlotTable


class _Empty:
    def items_lookup_and_delete_batch(self) -> list[Any]:
        return []


def test_recreated_tap_counts_from_zero() -> None:
    pm = object.__new__(ProbeMaps)  # only what _read_taps uses: no kernel needed
    pm._tap_counters = True
    pm.tap_slots = SlotTable(4, "tap")
    pm.tap_slots.take(("root", "vnet0"))
    pm._last_taps = {("root", "vnet0"): [1000, 100000, 500, 50000, 0, 500]}  # the old tap's totals
    pm._t = lambda name: _Empty()  # type: ignore[method-assign]
    new = [30, 3000, 20, 2000, 0, 20]  # the new vnet0's own counters
    pm._tap_counter_values = lambda keys: {("root", "vnet0"): new}  # type: ignore[method-assign]
    d = Deltas()
    pm._read_taps(d)
    assert d.taps[("root", "vnet0")] == dict(zip(TAP_FIELDS, new, strict=True))
