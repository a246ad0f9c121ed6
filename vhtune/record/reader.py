"""Reading a recording back: ``read_table(dir, name)`` and ``read_manifest(dir)``.

Works on a recording cut short (SIGKILL, power loss): chunks are only ever renamed into place whole, so
every ``*.parquet`` present is complete; leftover ``*.tmp`` files are ignored. A missing table (nothing
was flushed for it) reads as an empty frame with the schema's columns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from vhtune.errors import RecordingError
from vhtune.record.frames import coerce, frame
from vhtune.record.writer import CHUNK_SUFFIX
from vhtune.schema import MANIFEST_NAME, RECORDING_FORMAT, SCHEMA_VERSION, TABLES, TableSchema, major

SPOILED = (
    "the recording is damaged: copy the whole directory again from where it was made, or analyze what is left "
    "with --skip-damaged"
)


def read_manifest(directory: Path | str) -> dict[str, Any]:
    d = Path(directory)
    path = d / MANIFEST_NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordingError(f"{d} is not a vhtune recording (no {MANIFEST_NAME})") from None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise RecordingError(f"{path} is unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != RECORDING_FORMAT:
        raise RecordingError(f"{path} is not a vhtune recording manifest")
    version = str(data.get("schema_version", "0"))
    try:
        version_major = major(version)
    except ValueError:
        raise RecordingError(
            f"{path} has schema version {version[:40]!r}, not a version number", hint=SPOILED
        ) from None
    if version_major != major(SCHEMA_VERSION):
        raise RecordingError(
            f"{d} has schema version {version}; this vhtune reads {major(SCHEMA_VERSION)}.x",
            hint="use the vhtune version that wrote it",
        )
    _check_shape(path, data)
    return data


def _check_shape(path: Path, data: dict[str, Any]) -> None:
    """The manifest values readers compute with have the types the writer gives them (null where optional)."""
    iv = data.get("interval_s")
    try:
        iv_ok = iv is None or (isinstance(iv, int | float) and not isinstance(iv, bool) and 0 < float(iv) < math.inf)
    except OverflowError:  # an integer beyond any float
        iv_ok = False
    if not iv_ok:
        raise RecordingError(f"{path} has interval_s {str(iv)[:40]}, not a positive number of seconds", hint=SPOILED)
    if data.get("complete") is not None and not isinstance(data["complete"], bool):
        raise RecordingError(f"{path} has complete {str(data['complete'])[:40]!r}, not true or false", hint=SPOILED)
    for key in ("probes", "discovery", "rows"):
        if not isinstance(data.get(key) or {}, dict):
            raise RecordingError(f"{path} has a malformed {key} entry (not an object)", hint=SPOILED)


def chunk_files(directory: Path | str, name: str) -> list[Path]:
    tdir = Path(directory) / name
    try:
        return sorted(p for p in tdir.iterdir() if p.name.endswith(CHUNK_SUFFIX))
    except FileNotFoundError:  # nothing was flushed for this table
        return []
    except OSError as exc:  # not a directory, a symlink loop, no permission
        raise RecordingError(
            f"{tdir} is unreadable ({exc.strerror or exc})", hint="check its permissions, or " + SPOILED
        ) from None


def read_chunks(schema: TableSchema, files: list[Path], damaged: list[str] | None = None) -> pd.DataFrame:
    """The rows of ``files`` (chunks of ``schema``'s table) in order, with its columns and dtypes. A chunk that
    cannot be read, lacks a column or holds values of another type is a RecordingError naming it; with a
    ``damaged`` list, that sentence is appended there instead and the chunk's rows are left out."""
    parts: list[tuple[Path, pd.DataFrame]] = []
    for path in files:
        try:
            parts.append((path, _read_chunk(schema, path)))
        except RecordingError as exc:
            if damaged is None:
                raise
            damaged.append(exc.message)
    while True:
        if not parts:
            return frame(schema, [])
        try:
            return coerce(schema, pd.concat([part for _path, part in parts], ignore_index=True))
        except (ValueError, TypeError, OverflowError) as exc:  # find the chunk to name (only on this error path)
            bad, culprit = _mistyped(schema, parts, exc)
            if damaged is None:
                raise bad from None
            damaged.append(bad.message)
            if culprit is None:  # no one chunk to blame: they disagree among themselves
                return frame(schema, [])
            parts = [(path, part) for path, part in parts if path != culprit]


def _read_chunk(schema: TableSchema, path: Path) -> pd.DataFrame:
    try:
        part = pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise RecordingError(f"chunk {path} is unreadable ({exc})", hint=SPOILED) from None
    for col in schema.columns:  # added in a later minor version than the chunk's
        if col.fill is not None and col.name not in part.columns:
            part[col.name] = col.fill
    missing = [c for c in schema.names if c not in part.columns]
    if missing:
        raise RecordingError(f"chunk {path} lacks columns {missing} of table {schema.name}", hint=SPOILED)
    for col in schema.columns:  # Parquet keeps timestamps typed: text there would be parsed as dates
        if col.dtype.startswith("datetime64") and not pd.api.types.is_datetime64_any_dtype(part[col.name]):
            raise RecordingError(
                f"chunk {path} has column {col.name} of type {part[col.name].dtype}, not a timestamp", hint=SPOILED
            )
    return part


def _mistyped(
    schema: TableSchema, parts: list[tuple[Path, pd.DataFrame]], exc: Exception
) -> tuple[RecordingError, Path | None]:
    """The error naming the first chunk whose values do not convert to ``schema``'s types, and that chunk."""
    for path, part in parts:
        for col in schema.columns:
            try:
                coerce(TableSchema(schema.name, schema.doc, (col,)), part)
            except (ValueError, TypeError, OverflowError) as err:
                why = f"has column {col.name} of the wrong type for {col.dtype} ({str(err).splitlines()[0][:120]})"
                return RecordingError(f"chunk {path} {why}", hint=SPOILED), path
    why = f"disagree on column types ({str(exc).splitlines()[0][:120]})"
    return RecordingError(f"the chunks of table {schema.name} in {parts[0][0].parent} {why}", hint=SPOILED), None


def _fill_drop_netns(directory: Path | str, drops: pd.DataFrame, skip_damaged: bool) -> pd.DataFrame:
    """A recording before schema 1.1 keyed tap drops by name only: give each the netns its name had in the
    taps table when that was one netns, else "?" (those recorders watched one tap per name)."""
    # With skip_damaged, the taps table's own read says what it left out.
    taps = read_chunks(TABLES["taps"], chunk_files(directory, "taps"), [] if skip_damaged else None)
    spaces = taps.groupby("ifname")["netns"].unique() if len(taps) else pd.Series(dtype=object)
    one = {str(n): str(v[0]) for n, v in spaces.items() if len(v) == 1}
    old = drops["netns"] == ""
    drops.loc[old, "netns"] = drops.loc[old, "ifname"].map(lambda n: one.get(str(n), "?"))
    return drops


def read_table(directory: Path | str, name: str, damaged: list[str] | None = None) -> pd.DataFrame:
    """All rows of table ``name`` in recording ``directory``, in write order, with the schema's dtypes. With a
    ``damaged`` list, damaged chunks and missing rows are said there (one sentence each) instead of raising, and
    the rows that are left are returned."""
    manifest = read_manifest(directory)  # refuses foreign or newer-major directories
    if name not in TABLES:
        raise RecordingError(f"unknown table {name!r}", hint=f"tables: {', '.join(sorted(TABLES))}")
    df = read_chunks(TABLES[name], chunk_files(directory, name), damaged)
    if name == "tap_drops" and len(df) and (df["netns"] == "").any():
        df = _fill_drop_netns(directory, df, damaged is not None)
    # The manifest counts rows only after their chunks are in place, so a SIGKILL leaves at least as many on disk.
    recorded = (manifest.get("rows") or {}).get(name)
    if isinstance(recorded, int) and len(df) < recorded:
        if damaged is None:
            raise RecordingError(
                f"table {name} in {directory} has {len(df)} rows on disk but the manifest records {recorded} "
                "written: chunk files are missing",
                hint=SPOILED,
            )
        damaged.append(f"table {name}: {recorded - len(df)} of the {recorded} rows written are missing or left out")
    return df
