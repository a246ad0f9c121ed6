"""Column names and dtypes of every frame and table vhtune writes or reads, versioned.

A recording's manifest names ``SCHEMA_VERSION``; readers refuse a major version they do not know. Each table
is a ``TableSchema``: its Parquet chunks and its pandas frame carry exactly these columns, in this order.
Bump ``SCHEMA_VERSION`` (major) when a column changes meaning or type, (minor) when one is added; an added
column gets a ``fill`` so that readers still load chunks written before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEMA_VERSION = "1.1"  # 1.1: tap_drops.netns
MANIFEST_NAME = "manifest.json"
RECORDING_FORMAT = "vhtune-recording"


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # pandas dtype string: "int64", "uint64", "float64", "string", "bool", "datetime64[ns]"
    doc: str
    unit: str = ""
    # A column added in a minor version: chunks written before it lack it and read with this value (None:
    # the column was always there, and a chunk without it is damaged).
    fill: object = None


@dataclass(frozen=True)
class TableSchema:
    name: str
    doc: str
    columns: tuple[Column, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def dtypes(self) -> dict[str, str]:
        return {c.name: c.dtype for c in self.columns}


TABLES: dict[str, TableSchema] = {}


def register(table: TableSchema) -> TableSchema:
    if table.name in TABLES:
        raise ValueError(f"table {table.name!r} registered twice")
    TABLES[table.name] = table
    return table


def major(version: str) -> int:
    return int(version.split(".", 1)[0])


from vhtune import recording_tables  # noqa: E402, F401  (registers the recording's tables)
