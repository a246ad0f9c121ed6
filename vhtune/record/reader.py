"""Reading a recording back: ``read_table(dir, name)`` and ``read_manifest(dir)``.

Works on a recording cut short (SIGKILL, power loss): chunks are only ever renamed into place whole, so
every ``*.parquet`` present is complete; leftover ``*.tmp`` files are ignored. A missing table (nothing
was flushed for it) reads as an empty frame with the schema's columns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from vhtune.errors import RecordingError
from vhtune.record.frames import coerce, frame
from vhtune.record.writer import CHUNK_SUFFIX
from vhtune.schema import MANIFEST_NAME, RECORDING_FORMAT, SCHEMA_VERSION, TABLES, major


def read_manifest(directory: Path | str) -> dict[str, Any]:
    d = Path(directory)
    path = d / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordingError(f"{d} is not a vhtune recording (no {MANIFEST_NAME})") from None
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path} is unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != RECORDING_FORMAT:
        raise RecordingError(f"{path} is not a vhtune recording manifest")
    version = str(data.get("schema_version", "0"))
    if major(version) != major(SCHEMA_VERSION):
        raise RecordingError(
            f"{d} has schema version {version}; this vhtune reads {major(SCHEMA_VERSION)}.x",
            hint="use the vhtune version that wrote it",
        )
    return data


def chunk_files(directory: Path | str, name: str) -> list[Path]:
    tdir = Path(directory) / name
    if not tdir.is_dir():
        return []
    return sorted(p for p in tdir.iterdir() if p.name.endswith(CHUNK_SUFFIX))


def read_table(directory: Path | str, name: str) -> pd.DataFrame:
    """All rows of table ``name`` in recording ``directory``, in write order, with the schema's dtypes."""
    read_manifest(directory)  # refuses foreign or newer-major directories
    if name not in TABLES:
        raise RecordingError(f"unknown table {name!r}", hint=f"tables: {', '.join(sorted(TABLES))}")
    schema = TABLES[name]
    parts: list[pd.DataFrame] = []
    for path in chunk_files(directory, name):
        try:
            parts.append(pq.read_table(path).to_pandas())
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise RecordingError(f"chunk {path} is unreadable ({exc})") from None
    if not parts:
        return frame(schema, [])
    df = pd.concat(parts, ignore_index=True)
    missing = [c for c in schema.names if c not in df.columns]
    if missing:
        raise RecordingError(f"table {name} in {directory} lacks columns {missing}")
    return coerce(schema, df)
