"""Optional table of a recording: the vhtune back-end's own per-queue counters (control socket ``stats``).

eBPF sees threads, taps and eventfds but not what a back-end does inside a wake-up: how many descriptors it
took per burst, or that it dropped a frame because the guest's RX ring had no free buffer. The vhtune
back-end counts both (vhtune/backend/stats.py); when a recording carries them as ``backend_queues/*.parquet``
(deltas per interval, same layout as the other tables) the ``small-batches`` and ``rx-ring-starved``
detectors use them. The recorder's schema is not changed by this module: the table is read only if present.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vhtune.record.reader import chunk_files, read_chunks
from vhtune.schema import Column, TableSchema

BACKEND_QUEUES = TableSchema(
    "backend_queues",
    "vhtune back-end counters per queue and interval (control socket `stats`, deltas)",
    (
        Column("ts", "datetime64[ns, UTC]", "end of the interval"),
        Column("interval_s", "float64", "length of the interval", "s"),
        Column("pid", "int64", "back-end process id"),
        Column("queue", "int64", "virtqueue index"),
        Column("dir", "string", "tx (driver → device) / rx (device → driver)"),
        Column("packets", "int64", "frames moved"),
        Column("bytes", "int64", "bytes moved", "B"),
        Column("kicks", "int64", "kicks drained"),
        Column("calls", "int64", "calls signalled"),
        Column("wakeups", "int64", "worker wake-ups serving this queue"),
        Column("bursts", "int64", "bursts (one batch of descriptors each)"),
        Column("drops_no_rx_buffer", "int64", "frames dropped: the guest RX ring had no free buffer"),
        Column("drops_tap_full", "int64", "frames dropped: the tap queue was full"),
        Column("drops_other", "int64", "frames dropped for any other reason"),
    ),
)


def read_backend_queues(directory: Path, damaged: list[str] | None = None) -> pd.DataFrame:
    return read_chunks(BACKEND_QUEUES, chunk_files(directory, BACKEND_QUEUES.name), damaged)
