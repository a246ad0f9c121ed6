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

SPOILED = "the recording is damaged: record it again, or copy the whole directory from where it was made"


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


def read_chunks(schema: TableSchema, files: list[Path]) -> pd.DataFrame:
    """The rows of ``files`` (chunks of ``schema``'s table) in order, with its columns and dtypes; a chunk that
    cannot be read, lacks a column or holds values of another type is a RecordingError naming it."""
    parts: list[pd.DataFrame] = []
    for path in files:
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
        parts.append(part)
    if not parts:
        return frame(schema, [])
    try:
        return coerce(schema, pd.concat(parts, ignore_index=True))
    except (ValueError, TypeError, OverflowError) as exc:  # find the chunk to name (only on this error path)
        for path, part in zip(files, parts, strict=True):
            for col in schema.columns:
                try:
                    coerce(TableSchema(schema.name, schema.doc, (col,)), part)
                except (ValueError, TypeError, OverflowError) as err:
                    raise RecordingError(
                        f"chunk {path} has column {col.name} of the wrong type for {col.dtype} "
                        f"({str(err).splitlines()[0][:120]})",
                        hint=SPOILED,
                    ) from None
        raise RecordingError(
            f"the chunks of table {schema.name} in {files[0].parent} disagree on column types "
            f"({str(exc).splitlines()[0][:120]})",
            hint=SPOILED,
        ) from None


def _fill_drop_netns(directory: Path | str, drops: pd.DataFrame) -> pd.DataFrame:
    """A recording before schema 1.1 keyed tap drops by name only: give each the netns its name had in the
    taps table when that was one netns, else "?" (those recorders watched one tap per name)."""
    taps = read_chunks(TABLES["taps"], chunk_files(directory, "taps"))
    spaces = taps.groupby("ifname")["netns"].unique() if len(taps) else pd.Series(dtype=object)
    one = {str(n): str(v[0]) for n, v in spaces.items() if len(v) == 1}
    old = drops["netns"] == ""
    drops.loc[old, "netns"] = drops.loc[old, "ifname"].map(lambda n: one.get(str(n), "?"))
    return drops


def read_table(directory: Path | str, name: str) -> pd.DataFrame:
    """All rows of table ``name`` in recording ``directory``, in write order, with the schema's dtypes."""
    manifest = read_manifest(directory)  # refuses foreign or newer-major directories
    if name not in TABLES:
        raise RecordingError(f"unknown table {name!r}", hint=f"tables: {', '.join(sorted(TABLES))}")
    df = read_chunks(TABLES[name], chunk_files(directory, name))
    if name == "tap_drops" and len(df) and (df["netns"] == "").any():
        df = _fill_drop_netns(directory, df)
    # The manifest counts rows only after their chunks are in place, so a SIGKILL leaves at least as many on disk.
    recorded = (manifest.get("rows") or {}).get(name)
    if isinstance(recorded, int) and len(df) < recorded:
        raise RecordingError(
            f"table {name} in {directory} has {len(df)} rows on disk but the manifest records {recorded} written: "
            "chunk files are missing",
            hint=SPOILED,
        )
    return df
