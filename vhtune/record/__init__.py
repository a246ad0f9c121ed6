"""``vhtune record``: the interval loop, target selection and the crash-safe recording on disk."""

from vhtune.record.reader import chunk_files, read_manifest, read_table
from vhtune.record.recorder import IntervalView, Recorder, RecordOptions, Summary
from vhtune.record.select import Selection
from vhtune.record.writer import RecordingWriter

__all__ = [
    "IntervalView",
    "RecordOptions",
    "Recorder",
    "RecordingWriter",
    "Selection",
    "Summary",
    "chunk_files",
    "read_manifest",
    "read_table",
]
