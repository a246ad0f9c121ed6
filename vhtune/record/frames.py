"""Rows → typed pandas frames: one place that applies a TableSchema's columns and dtypes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

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
