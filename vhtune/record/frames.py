"""Rows → typed pandas frames: one place that applies a TableSchema's columns and dtypes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vhtune.fsutil import atomic_write, make_dir_durable
from vhtune.schema import TableSchema


def coerce(schema: TableSchema, df: pd.DataFrame) -> pd.DataFrame:
    """``df`` reduced to exactly the schema's columns, in order, with its dtypes."""
    out = df.reindex(columns=schema.names)
    for col in schema.columns:
        if col.dtype.startswith("datetime64"):  # Parquet may hand back µs: back to the schema's ns
            out[col.name] = pd.to_datetime(out[col.name], utc=True).astype(col.dtype)  # type: ignore[call-overload]
        else:
            out[col.name] = out[col.name].astype(col.dtype)  # type: ignore[call-overload]
    return out


def frame(schema: TableSchema, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    return coerce(schema, pd.DataFrame(list(rows), columns=schema.names))


def write_chunk(path: Path, schema: TableSchema, rows: Sequence[dict[str, Any]]) -> None:
    """One Parquet chunk of ``schema``'s table, written atomically (readers see it whole or not at all).
    Raises OSError (disk full, read-only…) for the caller to phrase."""
    make_dir_durable(path.parent)
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame(schema, rows), preserve_index=False), buf)
    atomic_write(path, buf.getvalue().to_pybytes())
